"""Attention-entropy regularizers (faithful and default modes), sigmaReparam, QK spectral norm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from entreg import losses


def released_penalty(h, theta, t, gamma):
    """Loop re-implementation of the released entropy-guided-attention regularizer (one layer)."""
    b, heads, tq = h.shape
    e_max = np.log(t)
    total = 0.0
    for k in range(heads):
        s = 0.0
        for i, q in np.ndindex(b, tq):
            delta = h[i, k, q] - theta[k] * e_max
            if abs(delta) > gamma * e_max:
                s += delta**2
        total += s
    return total / heads


def test_band_penalty_faithful_mode_matches_the_released_code():
    rng = np.random.default_rng(0)
    h = rng.uniform(0, np.log(8), (3, 4, 8))
    theta = rng.uniform(0.2, 0.8, 4)
    got = losses.attention_band_penalty(h, theta[:, None], max_entropy=np.log(8), mode="faithful")
    np.testing.assert_allclose(got, released_penalty(h, theta, 8, 0.2), rtol=1e-12)


def test_band_penalty_default_is_smooth_per_row_and_batch_independent():
    rng = np.random.default_rng(1)
    t = 8
    h_max = np.asarray(losses.max_attention_entropy(t, t, causal=True))
    np.testing.assert_allclose(h_max, np.log(np.arange(1, t + 1)), rtol=1e-6)
    h = rng.uniform(0, 1, (2, 3, t)) * h_max
    theta = np.full((3, 1), 0.5)
    got = losses.attention_band_penalty(h, theta, max_entropy=h_max)
    delta = h - 0.5 * h_max
    want = np.mean(np.maximum(np.abs(delta) - 0.2 * h_max, 0) ** 2)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # Doubling the batch leaves the mean unchanged (the faithful sum doubles).
    hh = np.concatenate([h, h])
    np.testing.assert_allclose(losses.attention_band_penalty(hh, theta, max_entropy=h_max), got)
    f = losses.attention_band_penalty(h, theta, max_entropy=np.log(t), mode="faithful")
    f2 = losses.attention_band_penalty(hh, theta, max_entropy=np.log(t), mode="faithful")
    np.testing.assert_allclose(f2, 2 * f, rtol=1e-12)
    # Continuity at the band edge: the default is 0 there, the faithful one jumps to tol^2.
    edge = np.full((1, 1, 1), 0.5 * np.log(t) + 0.2 * np.log(t) + 1e-9)
    d = losses.attention_band_penalty(edge, np.full((1, 1), 0.5), max_entropy=np.log(t))
    f = losses.attention_band_penalty(
        edge, np.full((1, 1), 0.5), max_entropy=np.log(t), mode="faithful"
    )
    assert float(d) < 1e-15 and float(f) == pytest.approx((0.2 * np.log(t)) ** 2, rel=1e-6)


def test_band_penalty_gradients_reach_entropy_and_learnable_theta():
    rng = np.random.default_rng(2)
    h = rng.uniform(0, 2, (2, 3, 6))
    theta = np.array([[0.1], [0.5], [0.9]])
    mask = np.ones((2, 1, 6), bool)
    mask[1, :, 3:] = False

    def f(h, theta):
        return losses.attention_band_penalty(h, theta, max_entropy=np.log(6), mask=mask)

    gh, gt = jax.grad(f, (0, 1))(h, theta)
    assert np.all(np.isfinite(gh)) and np.any(gt != 0)
    assert np.all(np.asarray(gh)[1, :, 3:] == 0)  # masked rows do not count
    check_grads(lambda t: f(h, t), (theta,), order=1, modes=["rev"], eps=1e-6)


def test_floor_penalty():
    h = np.array([[[0.1, 1.0, 2.0]]])
    got = losses.attention_floor_penalty(h, 0.5, max_entropy=np.log(8))
    np.testing.assert_allclose(got, np.mean(np.maximum(0.5 * np.log(8) - h, 0) ** 2))
    with pytest.raises(ValueError, match="max_entropy"):
        losses.attention_floor_penalty(h, 0.5, max_entropy=np.ones(4))


@pytest.mark.parametrize("gamma_init", ["spectral", "one"])
def test_sigma_reparam_tracks_the_largest_singular_value(gamma_init):
    layer = losses.SigmaReparamLinear(12, 7, gamma_init=gamma_init, rngs=nnx.Rngs(0))
    w = np.asarray(layer.kernel[...], np.float64)
    s_max = np.linalg.svd(w, compute_uv=False)[0]
    np.testing.assert_allclose(layer.sigma(), s_max, rtol=1e-5)
    x = jax.random.normal(jax.random.key(1), (5, 12))
    y = layer(x)
    gamma = s_max if gamma_init == "spectral" else 1.0
    np.testing.assert_allclose(y, x @ (gamma / s_max * w), rtol=1e-4, atol=1e-5)
    # After the weights move, a few training calls (one power step each) recover sigma.
    layer.kernel[...] += 0.3 * jax.random.normal(jax.random.key(2), (12, 7), jnp.float32)
    for _ in range(200):
        layer(x)
    w2 = np.asarray(layer.kernel[...], np.float64)
    np.testing.assert_allclose(layer.sigma(), np.linalg.svd(w2, compute_uv=False)[0], rtol=1e-4)
    # Evaluation reuses the state; the gradient flows through sigma into the kernel.
    layer.update_stats = False
    u0 = np.asarray(layer.u[...])
    layer(x)
    np.testing.assert_array_equal(layer.u[...], u0)
    g = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(layer)
    assert np.all(np.isfinite(g["kernel"][...])) and np.any(g["gamma"][...] != 0)
    # The output scale is gamma: spectral norm of W_hat equals gamma.
    w_hat = float(layer.gamma[...]) / float(layer.sigma()) * w2
    np.testing.assert_allclose(
        np.linalg.svd(w_hat, compute_uv=False)[0], layer.gamma[...], rtol=1e-4
    )


def test_qk_spectral_norm_without_forming_the_product():
    rng = np.random.default_rng(3)
    wq, wk = rng.normal(size=(16, 4)), rng.normal(size=(16, 4))
    sigma, v = losses.qk_spectral_norm(wq, wk, rng.normal(size=16), iters=50)
    np.testing.assert_allclose(sigma, np.linalg.norm(wq @ wk.T, 2), rtol=1e-8)
    # One step per call, carrying v, tracks the norm.
    v = rng.normal(size=16)
    for _ in range(40):
        sigma, v = losses.qk_spectral_norm(wq, wk, v)
    np.testing.assert_allclose(sigma, np.linalg.norm(wq @ wk.T, 2), rtol=1e-6)
    g = jax.grad(lambda a: losses.qk_spectral_norm(a, wk, v)[0])(wq)
    assert np.all(np.isfinite(g))
