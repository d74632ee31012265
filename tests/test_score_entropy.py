"""Score entropy and SEDD: closed forms vs brute force, exact-score integrals, samplers."""

import functools
import itertools

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads
from scipy.special import rel_entr

import entreg
from entreg import losses
from tests import sedd_oracles as oracle

GRAPHS = {"absorbing": losses.AbsorbingGraph, "uniform": losses.UniformGraph}
NOISE = {"absorbing": losses.LogLinearNoise(), "uniform": losses.GeometricNoise()}


def _se_numpy(s, r):
    k = np.where(r > 0, r * (np.log(np.where(r > 0, r, 1.0)) - 1.0), 0.0)
    return np.sum(np.exp(s) - r * s + k, axis=-1)


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(np.float64, (3, 5), elements=st.floats(-8, 8, allow_subnormal=False)),
    hnp.arrays(np.float64, (3, 5), elements=st.floats(0, 20, allow_subnormal=False)),
)
def test_score_entropy_oracle_bounds_and_equality(s, r):
    got = entreg.score_entropy(s, r)
    np.testing.assert_allclose(got, _se_numpy(s, r), rtol=1e-10, atol=1e-10)
    assert np.all(np.asarray(got) >= -1e-9)
    # Convex in the log-score: along the segment to another prediction.
    s2 = s[::-1]
    mid = entreg.score_entropy(0.3 * s + 0.7 * s2, r)
    assert np.all(np.asarray(mid) <= 0.3 * np.asarray(got) + 0.7 * _se_numpy(s2, r) + 1e-9)
    # Zero exactly at the true ratios (where they are positive).
    pos = np.maximum(r, 1e-3)
    np.testing.assert_allclose(entreg.score_entropy(np.log(pos), pos), 0.0, atol=1e-9)


def test_score_entropy_gradients_mask_and_edges():
    s = np.array([[0.3, -1.0, 2.0, 0.0]])
    r = np.array([[1.0, 0.0, 3.0, 0.5]])
    g = jax.grad(lambda s: entreg.score_entropy(s, r).sum())(s)
    np.testing.assert_allclose(g, np.exp(s) - r, rtol=1e-12)  # dSE/dlog s = s - r
    check_grads(lambda s, r: entreg.score_entropy(s, r), (s, r + 0.1), order=2, modes=["rev"])
    # Zero ratio: finite value and gradients.
    gr = jax.grad(lambda r: entreg.score_entropy(s, r).sum())(r)
    assert np.all(np.isfinite(gr)) and gr[0, 1] == pytest.approx(-s[0, 1])
    where = np.array([[True, False, True, True]])
    np.testing.assert_allclose(
        entreg.score_entropy(s, r, where=where),
        _se_numpy(s[:, [0, 2, 3]], r[:, [0, 2, 3]]),
        rtol=1e-12,
    )
    # axis, bf16 input accumulated in float32, vmap and jit.
    np.testing.assert_allclose(entreg.score_entropy(s.T, r.T, axis=0), _se_numpy(s, r))
    low = entreg.score_entropy(jnp.asarray(s, jnp.bfloat16), jnp.asarray(r, jnp.bfloat16))
    assert low.dtype == jnp.float32
    np.testing.assert_allclose(low, _se_numpy(s, r), rtol=2e-2)
    batched = jax.jit(jax.vmap(entreg.score_entropy))(np.stack([s, s]), np.stack([r, r]))
    np.testing.assert_allclose(batched[:, 0], _se_numpy(s, r)[0])


def test_score_entropy_errors():
    with pytest.raises(ValueError, match="ratio"):
        entreg.score_entropy(np.zeros(3), np.array([1.0, -0.5, 0.0]))
    with pytest.raises(ValueError, match="log_score"):
        entreg.score_entropy(np.zeros(3), np.zeros(4))
    with pytest.raises(TypeError, match="ratio"):
        entreg.score_entropy(np.zeros(3), np.zeros(3, int))
    with pytest.raises(ValueError, match="axis"):
        entreg.score_entropy(np.zeros(3), np.zeros(3), axis=2)


@pytest.mark.parametrize("kind", ["absorbing", "uniform"])
def test_closed_forms_match_brute_force(kind):
    rng = np.random.default_rng(0)
    n = 5
    graph = GRAPHS[kind](n)
    dim = graph.dim
    for _ in range(60):
        sigma = float(np.exp(rng.uniform(np.log(1e-4), np.log(15.0))))
        x0 = int(rng.integers(n))
        xt = int(rng.choice([x0, rng.integers(dim)]))
        if kind == "absorbing" and rng.random() < 0.5:
            xt = n  # masked
        s = rng.normal(size=dim)
        s[xt] = 0.0
        want = oracle.brute_force_dse(kind, n, s, xt, x0, sigma)
        got = graph.score_entropy(s[None], np.array([xt]), np.array([x0]), sigma)[0]
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
        # The dense conditional ratios and the transition, against the matrix exponential.
        p = oracle.transition(kind, n, sigma)[:, x0]
        np.testing.assert_allclose(graph.transition(np.array(x0), sigma), p, rtol=1e-9, atol=1e-15)
        w = oracle.rate_matrix(kind, n)[xt]
        with np.errstate(divide="ignore", invalid="ignore"):  # p[xt] = 0: impossible x_t
            want_r = np.where((np.arange(dim) != xt) & (w > 0), p / p[xt], 0.0)
        np.testing.assert_allclose(graph.ratios(np.array(x0), np.array(xt), sigma), want_r, 1e-9)
        np.testing.assert_allclose(
            graph.rate_weights(np.array(xt)), np.where(np.arange(dim) == xt, 0.0, w)
        )


@pytest.mark.parametrize("kind", ["absorbing", "uniform"])
def test_forward_sampling_and_prior(kind):
    graph, sigma = GRAPHS[kind](4), 0.7
    x0 = jnp.zeros((20000,), jnp.int32)
    xt = graph.sample_transition(jax.random.key(0), x0, sigma)
    freq = np.bincount(np.asarray(xt), minlength=graph.dim) / x0.size
    np.testing.assert_allclose(freq, oracle.transition(kind, 4, sigma)[:, 0], atol=0.015)
    # Prior KL against the base distribution the samplers start from.
    prior = graph.sample_prior(jax.random.key(1), (20000,), 2.0)
    base = np.bincount(np.asarray(prior), minlength=graph.dim) / prior.size
    p_t = oracle.transition(kind, 4, 2.0)
    pi = p_t[:, :4].mean(axis=1)  # marginal of a uniform real x_0
    np.testing.assert_allclose(base, pi, atol=0.015)
    kl = np.sum(rel_entr(p_t[:, 0], pi))
    np.testing.assert_allclose(graph.prior_kl(np.array(0), 2.0), kl, rtol=1e-9)


def test_mdlm_identity():
    """Absorbing score entropy with log s = log_softmax(logits) - log expm1(sigma) is MDLM's
    weighted cross-entropy r * (-log q_{x0}) at masked positions (no mass-calibration term)."""
    rng = np.random.default_rng(1)
    n, graph = 6, losses.AbsorbingGraph(6)
    logits = rng.normal(size=(10, n))
    x0 = rng.integers(n, size=10)
    sigma = rng.uniform(0.01, 5.0, size=10)
    log_q = jax.nn.log_softmax(logits)
    s = np.concatenate([log_q - np.log(np.expm1(sigma))[:, None], np.zeros((10, 1))], -1)
    got = graph.score_entropy(s, np.full(10, n), x0, sigma)
    want = -np.take_along_axis(np.asarray(log_q), x0[:, None], 1)[:, 0] / np.expm1(sigma)
    np.testing.assert_allclose(got, want, rtol=1e-9)
    # Log-linear schedule: sigma' / expm1(sigma) = 1 / t (MDLM's weight), up to eps.
    noise = losses.LogLinearNoise()
    t = np.linspace(0.05, 1.0, 7)
    weight = noise.rate(t) / np.expm1(noise.total(t))
    np.testing.assert_allclose(weight, 1.0 / t, rtol=1e-12)


@pytest.mark.parametrize("noise", [losses.LogLinearNoise(), losses.GeometricNoise()])
def test_schedule_rate_is_the_derivative_of_total_noise(noise):
    t = np.linspace(0.0, 1.0, 11)
    np.testing.assert_allclose(jax.vmap(jax.grad(noise.total))(t), noise.rate(t), rtol=1e-10)
    sigma, rate = noise(t)
    np.testing.assert_allclose(sigma, noise.total(t))
    assert np.all(np.diff(np.asarray(sigma)) > 0)


def test_schedule_errors():
    with pytest.raises(ValueError, match="eps"):
        losses.LogLinearNoise(eps=1.5)
    with pytest.raises(ValueError, match="sigma_min"):
        losses.GeometricNoise(sigma_min=3.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="num_tokens"):
        losses.AbsorbingGraph(1)


@functools.cache
def _exact_integrand(kind: str, n: int, d: int):
    graph = GRAPHS[kind](n)

    @jax.jit
    def loss(log_score, xs, posterior, p, sigma):
        clean = jnp.arange(n)[:, None, None] * jnp.ones(xs.shape, xs.dtype)
        l = graph.score_entropy(
            jnp.broadcast_to(log_score, (n, *log_score.shape)),
            jnp.broadcast_to(xs, clean.shape),
            clean,
            sigma,
        )
        return jnp.sum(p[:, None] * jnp.sum(jnp.moveaxis(l, 0, -1) * posterior, -1))

    def integrand(sigma):
        xs, p, log_score, posterior = oracle.exact_scores(kind, n, d, sigma)
        return float(loss(log_score, xs, posterior, p, sigma))

    return integrand


@pytest.mark.parametrize(
    "kind, lo, want",
    [("absorbing", 0.0, 6.08015), ("uniform", 1e-8, 6.08853), ("uniform", 1e-4, 6.08419)],
)
def test_exact_score_integral_on_the_sticky_chain(kind, lo, want):
    """Integral over sigma_bar of the loss at the exact concrete score, d = 6 (reference sheet)."""
    integrand = _exact_integrand(kind, 4, 6)
    x, w = np.polynomial.legendre.leggauss(32)
    if kind == "absorbing":  # log-linear schedule, t in [0, 1]
        noise = losses.LogLinearNoise()
        t, w = 0.5 * (x + 1.0), 0.5 * w
        value = sum(
            wi * float(noise.rate(ti)) * integrand(float(noise.total(ti)))
            for ti, wi in zip(t, w, strict=True)
        )
    else:  # geometric schedule [lo, 20]: integrate in log sigma
        a, b = np.log(lo), np.log(20.0)
        u, w = a + (b - a) * 0.5 * (x + 1.0), 0.5 * (b - a) * w
        value = sum(
            wi * np.exp(ui) * integrand(float(np.exp(ui))) for ui, wi in zip(u, w, strict=True)
        )
    assert value == pytest.approx(want, abs=1e-3)
    # Without the prior term the integral stays below H (up to the quadrature error).
    assert value <= oracle.chain_entropy(6) + 1e-4


def test_analytic_step_under_exact_scores():
    """Step probabilities sum to one; a masked token unmasks with probability (t - s) / t."""
    graph, noise, n, d = losses.AbsorbingGraph(4), losses.LogLinearNoise(), 4, 4
    for t, s in [(0.9, 0.6), (0.5, 0.45), (0.2, 0.01)]:
        sigma = float(noise.total(t))
        xs, _, log_score, _ = oracle.exact_scores("absorbing", n, d, sigma)
        probs = losses.step_probs(graph, noise, log_score, xs, t, s)
        np.testing.assert_allclose(np.sum(probs, -1), 1.0, atol=1e-10)
        assert np.all(np.asarray(probs) >= -1e-12)
        masked = xs == n
        unmask = 1.0 - np.asarray(probs)[..., n]
        np.testing.assert_allclose(unmask[masked], (t - s) / t, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(probs)[~masked, n], 0.0, atol=1e-12)
        # Under the log-linear schedule e^{dsigma} - 1 = (t - s) sigma'(t): Euler is exact here.
        euler = losses.step_probs(graph, noise, log_score, xs, t, s, method="euler")
        np.testing.assert_allclose(euler, probs, rtol=1e-9, atol=1e-12)
    # Uniform diffusion: both sum to one, and they differ.
    graph, noise = losses.UniformGraph(4), losses.GeometricNoise()
    sigma = float(noise.total(0.5))
    xs, _, log_score, _ = oracle.exact_scores("uniform", n, d, sigma)
    a = losses.step_probs(graph, noise, log_score, xs, 0.5, 0.4)
    e = losses.step_probs(graph, noise, log_score, xs, 0.5, 0.4, method="euler")
    np.testing.assert_allclose(np.sum(a, -1), 1.0, atol=1e-10)
    np.testing.assert_allclose(np.sum(e, -1), 1.0, atol=1e-10)
    assert np.max(np.abs(np.asarray(a) - np.asarray(e))) > 1e-3


def _toy_model(dim, key=0):
    """A position-wise model: output = embedding of x_t scaled by a function of sigma."""
    w = jax.random.normal(jax.random.key(key), (dim, dim)) * 0.1

    def model_fn(params, xt, sigma):
        return params[xt] * jnp.log1p(sigma)[:, None, None]

    return w, model_fn


@pytest.mark.parametrize("kind", ["absorbing", "uniform"])
def test_loss_elbo_and_sampler_run_jitted_with_finite_gradients(kind):
    graph, noise = GRAPHS[kind](5), NOISE[kind]
    params, model_fn = _toy_model(graph.dim)
    x0 = jax.random.randint(jax.random.key(2), (8, 6), 0, 5)

    @jax.jit
    def loss(params, key):
        return losses.sedd_loss(key, functools.partial(model_fn, params), x0, graph, noise).mean()

    value, grads = jax.value_and_grad(loss)(params, jax.random.key(3))
    assert np.isfinite(value) and np.all(np.isfinite(grads)) and np.any(grads != 0)
    elbo = jax.jit(
        lambda p, k: losses.sedd_elbo(k, functools.partial(model_fn, p), x0, graph, noise)
    )(params, jax.random.key(4))
    assert elbo.shape == (8,) and np.all(np.asarray(elbo) > 0)

    @functools.partial(jax.jit, static_argnames=("method",))
    def draw(params, key, steps, method):  # steps traced: one compilation for every count
        fn = functools.partial(model_fn, params)
        return losses.sample(key, fn, graph, noise, (4, 6), steps=steps, method=method)

    for method in ("analytic", "euler"):
        a = draw(params, jax.random.key(5), 8, method)
        b = draw(params, jax.random.key(5), 8, method)
        c = draw(params, jax.random.key(6), 8, method)
        np.testing.assert_array_equal(a, b)  # reproducible from the key
        assert np.any(np.asarray(a) != np.asarray(c))
        assert a.shape == (4, 6) and np.all((np.asarray(a) >= 0) & (np.asarray(a) < 5))
        assert draw(params, jax.random.key(5), 3, method).shape == (4, 6)
    assert draw._cache_size() == 2  # one per method, whatever the step count
    with pytest.raises(ValueError, match="steps"):
        losses.sample(
            jax.random.key(0), functools.partial(model_fn, params), graph, noise, (4, 6), steps=0
        )


def test_padding_mask_and_score_entropy_term():
    graph, noise = losses.AbsorbingGraph(5), losses.LogLinearNoise()
    rng = np.random.default_rng(3)
    x0 = rng.integers(5, size=(4, 6))
    xt = np.where(rng.random((4, 6)) < 0.5, 5, x0)
    sigma, rate = noise(np.linspace(0.2, 0.9, 4))
    log_score = graph.log_score(rng.normal(size=(4, 6, 6)), xt, sigma[:, None])
    mask = np.ones((4, 6), bool)
    mask[:, 4:] = False
    full = losses.denoising_score_entropy(graph, log_score, xt, x0, sigma, rate)
    part = losses.denoising_score_entropy(graph, log_score, xt, x0, sigma, rate, mask=mask)
    per_pos = graph.score_entropy(log_score, xt, x0, sigma[:, None])
    np.testing.assert_allclose(part, rate * np.sum(np.asarray(per_pos)[:, :4], -1), rtol=1e-12)
    np.testing.assert_allclose(full, rate * np.sum(per_pos, -1), rtol=1e-12)
    term = losses.score_entropy_term(graph, mask="mask", weight=0.5)
    signals = dict(log_score=log_score, xt=xt, x0=x0, sigma=sigma, rate=rate, mask=mask)
    r = term(signals, term.init(), 0)
    np.testing.assert_allclose(r.value, np.mean(part))
    np.testing.assert_allclose(r.loss, 0.5 * np.mean(part))
    with pytest.raises(KeyError, match="rate"):
        term({k: v for k, v in signals.items() if k != "rate"}, (), 0)
    with pytest.raises(ValueError, match="sigma"):
        losses.denoising_score_entropy(graph, log_score, xt, x0, sigma[:2], rate)


# --------------------------------------------- sedd_elbo against an exact quadrature oracle
# Absorbing diffusion over N = 3 tokens, length L = 3, log-linear noise with eps = 0.2, so that
# the prior term e^{-sigma(1)} L log N = 0.66 nats is far above the Monte-Carlo error.
ELBO_N, ELBO_L, ELBO_NOISE = 3, 3, losses.LogLinearNoise(eps=0.2)


def _elbo_model(seed: int, sigma_scale: float):
    """A model whose output depends on the position, the noise level and the whole sequence
    (its number of masks), so the bound has no closed form."""
    rng = np.random.default_rng(seed)
    dim = ELBO_N + 1
    w, c, u = (rng.normal(size=(ELBO_L, dim)) for _ in range(3))
    c, u = sigma_scale * c, 0.5 * u

    def numpy_fn(xt, sigma):  # xt [L], sigma scalar -> [L, dim]
        return w + c * np.tanh(sigma) + u * np.mean(xt == ELBO_N)

    def jax_fn(xt, sigma):  # xt [B, L], sigma [B] -> [B, L, dim]
        frac = jnp.mean(xt == ELBO_N, axis=-1)[:, None, None]
        return w + c * jnp.tanh(sigma)[:, None, None] + u * frac

    return numpy_fn, jax_fn


def _exact_elbo(numpy_fn, x0) -> float:
    """int_0^1 sigma'(t) E_{x_t ~ p_t(. | x_0)} [sum_i l_i(x_t)] dt + sum_i KL(p_1(. | x_0^i) || pi)
    in float64: Gauss-Legendre in t, every x_t enumerated, l_i by brute force from the rate
    matrix."""
    n, dim = ELBO_N, ELBO_N + 1
    x, w = np.polynomial.legendre.leggauss(32)
    total = 0.0
    for xi, wi in zip(x, w, strict=True):
        t = 0.5 * (xi + 1.0)
        sigma = -np.log1p(-(1.0 - ELBO_NOISE.eps) * t)
        rate = (1.0 - ELBO_NOISE.eps) / (1.0 - (1.0 - ELBO_NOISE.eps) * t)
        masked_p = 1.0 - np.exp(-sigma)
        expected = 0.0
        for masks in itertools.product([False, True], repeat=ELBO_L):
            xt = np.where(masks, n, x0)
            prob = np.prod(np.where(masks, masked_p, 1.0 - masked_p))
            out = numpy_fn(xt, sigma)
            log_score = out - np.log(np.expm1(sigma)) - np.log(n)
            expected += prob * sum(
                oracle.brute_force_dse("absorbing", n, log_score[i], xt[i], x0[i], sigma)
                for i in range(ELBO_L)
            )
        total += 0.5 * wi * rate * expected
    # Base distribution pi (what the sampler starts from): MASK w.p. 1 - e^{-sigma_1}, else a
    # uniform real token.
    sigma1 = -np.log(ELBO_NOISE.eps)
    pi = np.r_[np.full(n, np.exp(-sigma1) / n), 1.0 - np.exp(-sigma1)]
    p1 = oracle.transition("absorbing", n, sigma1)
    prior = sum(np.sum(rel_entr(p1[:, a], pi)) for a in x0)
    assert p1.shape == (dim, dim)
    return total + prior


def _elbo_estimate(jax_fn, x0s, copies, key):
    batch = np.repeat(np.asarray(x0s), copies, axis=0)
    est = losses.sedd_elbo(key, jax_fn, batch, losses.AbsorbingGraph(ELBO_N), ELBO_NOISE)
    est = np.asarray(est).reshape(len(x0s), copies)
    return est.mean(1), est.std(1, ddof=1) / np.sqrt(copies)


def test_sedd_elbo_matches_exact_quadrature_within_standard_error():
    numpy_fn, jax_fn = _elbo_model(0, sigma_scale=2.0)
    x0s = [(0, 1, 2), (2, 2, 0), (1, 1, 1)]
    mean, se = _elbo_estimate(jax_fn, x0s, 1024, jax.random.key(0))
    exact = np.array([_exact_elbo(numpy_fn, np.array(x0)) for x0 in x0s])
    # The standard error is small against the prior term (0.66) and against the variation of
    # the integrand over t, so a dropped prior or a truncated time range cannot pass.
    assert np.all(se < 0.06), se
    np.testing.assert_array_less(np.abs(mean - exact), 4.0 * se)


def test_sedd_elbo_bounds_the_model_likelihood():
    """With the exact scores of a factorized q, the reverse process started from pi generates
    p(x_0^i) = (1 - e^{-sigma_1}) q_i(x_0^i) + e^{-sigma_1} / N per position; the bound is above
    -log p for every x_0, exactly (quadrature) and in the Monte-Carlo estimate."""
    rng = np.random.default_rng(1)
    q = rng.dirichlet(np.ones(ELBO_N), size=ELBO_L)  # [L, N]
    out = np.concatenate([np.log(q) + np.log(ELBO_N), np.zeros((ELBO_L, 1))], -1)

    def jax_fn(xt, sigma):
        return jnp.broadcast_to(out, (*xt.shape, ELBO_N + 1))

    keep = ELBO_NOISE.eps  # e^{-sigma_1}
    x0s = [(0, 0, 0), (0, 1, 2), (2, 1, 0), (1, 2, 2), (2, 0, 1)]
    nll = np.array(
        [-np.sum(np.log((1 - keep) * q[np.arange(ELBO_L), x0] + keep / ELBO_N)) for x0 in x0s]
    )
    exact = np.array([_exact_elbo(lambda xt, s: out, np.array(x0)) for x0 in x0s])
    assert np.all(exact >= nll - 1e-9) and np.max(exact - nll) > 0.05
    mean, se = _elbo_estimate(jax_fn, x0s, 256, jax.random.key(1))
    np.testing.assert_array_less(np.abs(mean - exact), 4.0 * se + 1e-9)


def test_sedd_loss_and_elbo_ignore_padding_whatever_it_holds():
    # Uniform diffusion: every counted position contributes, whatever its noise draw.
    graph, noise = losses.UniformGraph(5), losses.GeometricNoise()
    params, model_fn = _toy_model(graph.dim)
    rng = np.random.default_rng(4)
    x0 = rng.integers(5, size=(6, 7))
    mask = np.ones((6, 7), bool)
    mask[:, 5:] = False
    mask[2] = False  # an all-padding sequence: zero loss
    # Padding with other real tokens, and with ids outside the vocabulary.
    other = np.where(mask, x0, (x0 + 1) % 5)
    garbage = np.where(mask, x0, rng.integers(-3, 40, size=x0.shape))

    def loss(params, tokens):
        fn = functools.partial(model_fn, params)
        per_seq = losses.sedd_loss(jax.random.key(0), fn, tokens, graph, noise, mask=mask)
        return per_seq.sum(), per_seq

    (v1, per_seq), g1 = jax.value_and_grad(loss, has_aux=True)(params, x0)
    for padded in (other, garbage):
        (v2, _), g2 = jax.value_and_grad(loss, has_aux=True)(params, padded)
        np.testing.assert_array_equal(v1, v2)
        np.testing.assert_array_equal(g1, g2)
    assert per_seq[2] == 0.0 and np.all(np.asarray(per_seq)[np.arange(6) != 2] > 0)
    assert np.all(np.isfinite(g1))
    # Padding positions do not count: the masked loss differs from the unmasked one.
    fn = functools.partial(model_fn, params)
    full = losses.sedd_loss(jax.random.key(0), fn, x0, graph, noise)
    assert np.abs(np.asarray(full) - np.asarray(per_seq)).max() > 1e-6
    elbo = losses.sedd_elbo(jax.random.key(1), fn, garbage, graph, noise, mask=mask)
    np.testing.assert_array_equal(
        elbo, losses.sedd_elbo(jax.random.key(1), fn, x0, graph, noise, mask=mask)
    )


def test_denoising_score_entropy_padding_garbage_reaches_no_gradient():
    graph, noise = losses.UniformGraph(4), losses.GeometricNoise()
    rng = np.random.default_rng(5)
    x0 = rng.integers(4, size=(3, 5))
    xt = rng.integers(4, size=(3, 5))
    mask = np.ones((3, 5), bool)
    mask[:, 3:] = False
    sigma, rate = noise(np.array([0.2, 0.5, 0.9]))
    log_score = rng.normal(size=(3, 5, 4))
    log_score[~mask] = np.nan
    xt_bad = np.where(mask, xt, -7)

    def f(s):
        return losses.denoising_score_entropy(graph, s, xt_bad, x0, sigma, rate, mask=mask).sum()

    value, grad = jax.value_and_grad(f)(log_score)
    assert np.isfinite(value) and np.all(np.asarray(grad)[~mask] == 0.0)
    clean = np.where(mask[..., None], log_score, 0.0)
    want = losses.denoising_score_entropy(graph, clean, xt, x0, sigma, rate, mask=mask).sum()
    np.testing.assert_allclose(value, want, rtol=1e-12)


def test_final_denoising_step_never_returns_mask():
    """A model with tiny scores leaves most positions masked until the last step, which must
    unmask every one of them (without that step many stay MASK)."""
    graph, noise = losses.AbsorbingGraph(3), losses.LogLinearNoise()

    def model_fn(xt, sigma):
        return jnp.full((*xt.shape, graph.dim), -30.0)

    key = jax.random.key(7)
    x = losses.sample(key, model_fn, graph, noise, (64, 8), steps=1)
    assert np.all(np.asarray(x) < graph.num_tokens)
    raw = losses.sample(key, model_fn, graph, noise, (64, 8), steps=1, denoise=False)
    assert np.mean(np.asarray(raw) == graph.mask_id) > 0.9
