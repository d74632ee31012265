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


def test_attention_entropy_term_band_per_layer_targets_from_signals():
    rng = np.random.default_rng(4)
    t, heads = 6, 3
    layers = tuple(rng.uniform(0, np.log(t), (2, heads, t)) for _ in range(2))
    theta = rng.uniform(0.2, 0.8, (2, heads))
    mask = np.ones((2, 1, t), bool)
    mask[0, :, 4:] = False
    term = losses.attention_entropy_term("band", target="theta", causal=True, mask="rows")
    assert term.name == "attention_band"
    signals = {"attention_entropy": layers, "theta": theta, "rows": mask}
    r = term(signals, term.init(), step=0)
    # Oracle: per-layer float64 loops with per-row causal maxima log(i + 1).
    h_max = np.log(np.arange(1, t + 1))
    want = []
    for h, th in zip(layers, theta, strict=True):
        pen = [
            max(abs(h[b, k, q] - th[k] * h_max[q]) - 0.2 * h_max[q], 0.0) ** 2
            for b, k, q in np.ndindex(h.shape)
            if mask[b, 0, q]
        ]
        want.append(np.mean(pen))
    np.testing.assert_allclose(r.value, np.mean(want), rtol=1e-10)
    np.testing.assert_allclose(r.loss, r.value)
    # The learnable targets receive a gradient through the signals.
    g = jax.grad(lambda th: term({**signals, "theta": th}, (), 0).loss)(theta)
    assert np.all(np.isfinite(g)) and np.any(g != 0)


def test_attention_entropy_term_faithful_and_floor():
    rng = np.random.default_rng(5)
    t = 8
    layers = [rng.uniform(0, np.log(t), (3, 4, t)) for _ in range(3)]
    theta = rng.uniform(0.2, 0.8, 4)
    faithful = losses.attention_entropy_term(
        "band", target=theta, mode="faithful", causal=True, weight=2.0
    )
    r = faithful({"attention_entropy": layers}, (), 0)
    # The released code: per-head sums, averaged over heads and layers, with E_max = log T.
    want = np.mean([released_penalty(h, theta, t, 0.2) for h in layers])
    np.testing.assert_allclose(r.value, want, rtol=1e-10)
    np.testing.assert_allclose(r.loss, 2.0 * want, rtol=1e-10)
    floor = losses.attention_entropy_term("floor", target=0.5, name="guard")
    r = floor({"attention_entropy": layers[0]}, (), 0)
    np.testing.assert_allclose(
        r.value, np.mean(np.maximum(0.5 * np.log(t) - layers[0], 0) ** 2), rtol=1e-10
    )


def test_attention_entropy_term_errors():
    h = np.ones((2, 3, 4))
    with pytest.raises(ValueError, match="kind"):
        losses.attention_entropy_term("ceiling", target=0.5)
    with pytest.raises(ValueError, match="mode"):
        losses.attention_entropy_term("floor", target=0.5, mode="faithful")
    term = losses.attention_entropy_term("band", target=np.ones((3, 3)))
    with pytest.raises(ValueError, match="target"):
        term({"attention_entropy": (h, h)}, (), 0)  # 3 layers of targets for 2 layers
    with pytest.raises(KeyError, match="theta"):
        losses.attention_entropy_term("band", target="theta")({"attention_entropy": h}, (), 0)
    with pytest.raises(ValueError, match="attention_entropy"):
        losses.attention_entropy_term("floor", target=0.5)({"attention_entropy": h[0, 0]}, (), 0)


def test_attention_terms_through_entropy_attention_and_compose():
    """EntropyAttention records entropy; the band and floor terms train the model through it."""
    import entreg

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List(
                [entreg.nnx.EntropyAttention(2, 8, decode=False, rngs=rngs) for _ in range(2)]
            )
            self.theta = nnx.Param(jnp.full((2, 2), 0.5, jnp.float32))

        def __call__(self, x):
            for layer in self.layers:
                x = x + layer(x, is_causal=True)
            return x

    def task(model, x):
        y, inter = nnx.capture(model, nnx.Intermediate)(x)
        attn = entreg.nnx.collect(inter, "attention_entropy")["attention_entropy"]
        return jnp.mean(y**2), {"attention_entropy": attn, "theta": model.theta[...]}

    loss_fn = entreg.compose(
        task,
        losses.attention_entropy_term("band", target="theta", causal=True, weight=1.0),
        losses.attention_entropy_term("floor", target=0.9, causal=True, weight=1.0),
    )
    model = Net(nnx.Rngs(0))
    x = 3.0 * jax.random.normal(jax.random.key(1), (4, 5, 8))
    (loss, (_, metrics)), grads = nnx.value_and_grad(
        lambda m: loss_fn(m, x, state=loss_fn.init()), has_aux=True
    )(model)
    assert metrics["attention_band/value"] > 0 and metrics["attention_floor/value"] > 0
    assert np.any(grads["theta"][...] != 0)
    q_grad = grads["layers"][0]["query"]["kernel"][...]
    assert np.all(np.isfinite(q_grad)) and np.any(q_grad != 0)
