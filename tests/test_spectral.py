"""Spectral entropies: numpy float64 and `vendi-score` oracles, analytic cases, finite gradients
at degenerate spectra (where the naive implementations give NaN), DSE/DSMI, the matrix-free
estimate, terms, sharding."""

import functools
import math

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads
from vendi_score import vendi

import entreg
from entreg import losses

ORDERS = [0.0, 0.5, 1.0, 1.01, 2.0, 3.0, math.inf]
GRAD_ORDERS = [0.5, 1.0, 2.0, 3.0]


def renyi_np(lam, q, eps=1e-12):
    """Float64 oracle: Renyi entropy of a spectrum normalized to sum one."""
    lam = np.clip(np.asarray(lam, np.float64), 0, None)
    p = lam / lam.sum()
    p = p[p > eps]
    if q == 1:
        return float(-(p * np.log(p)).sum())
    if q == 0:
        return float(np.log(p.size))
    if q == math.inf:
        return float(-np.log(p.max()))
    return float(np.log((p**q).sum()) / (1 - q))


def random_psd(rng, n, rank=None):
    a = rng.normal(size=(n, rank or n))
    return a @ a.T


def unit_rows(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def rbf(x, y):
    return jnp.exp(-jnp.sum((x - y) ** 2) / 2.0)


SPECTRA = hnp.arrays(
    np.float64, st.integers(1, 12), elements=st.floats(0, 10, allow_subnormal=False)
).filter(lambda v: v.sum() > 1e-3)


@given(SPECTRA, st.sampled_from(ORDERS))
def test_spectral_entropy_matches_oracle_and_bounds(lam, q):
    got = float(entreg.spectral_entropy(lam, order=q, eps=1e-12))
    np.testing.assert_allclose(got, renyi_np(lam, q), rtol=1e-9, atol=1e-12)
    assert -1e-12 <= got <= math.log(lam.size) + 1e-9


@given(SPECTRA)
def test_renyi_non_increasing_in_order(lam):
    values = [float(entreg.spectral_entropy(lam, order=q, eps=1e-12)) for q in ORDERS]
    assert all(a >= b - 1e-9 for a, b in zip(values, values[1:], strict=False))


def test_spectral_entropy_axis_base_and_zero_spectrum():
    lam = np.random.default_rng(0).uniform(size=(3, 5))
    np.testing.assert_allclose(
        entreg.spectral_entropy(lam.T, axis=0, base=2),
        [renyi_np(r, 1) / np.log(2) for r in lam],
        rtol=1e-12,
    )
    for q in ORDERS:
        assert float(entreg.spectral_entropy(np.zeros(4), order=q)) == 0.0


@pytest.mark.parametrize("q", ORDERS)
def test_matrix_entropy_matches_eigvalsh(q):
    rng = np.random.default_rng(1)
    k = random_psd(rng, 7)
    want = renyi_np(np.linalg.eigvalsh(k), q)
    np.testing.assert_allclose(entreg.matrix_entropy(k, order=q), want, rtol=1e-10)
    # Density matrix: von Neumann entropy -tr(rho log rho) by scipy's matrix logarithm.
    if q == 1.0:
        from scipy.linalg import logm

        rho = k / np.trace(k)
        np.testing.assert_allclose(
            entreg.matrix_entropy(rho), -np.trace(rho @ logm(rho)).real, rtol=1e-9
        )


def test_joint_entropy_and_mutual_information():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(2, 30, 3))
    y = x + 0.3 * y  # dependent
    gauss = lambda z: np.exp(-((z[:, None] - z[None]) ** 2).sum(-1) / 2)  # noqa: E731
    a, b = gauss(x), gauss(y)
    for q in (1.0, 1.01, 2.0):
        ha = renyi_np(np.linalg.eigvalsh(a), q)
        hb = renyi_np(np.linalg.eigvalsh(b), q)
        hab = renyi_np(np.linalg.eigvalsh(a * b), q)
        np.testing.assert_allclose(entreg.joint_matrix_entropy(a, b, order=q), hab, rtol=1e-9)
        mi = entreg.matrix_mutual_information(a, b, order=q, base=2)
        np.testing.assert_allclose(mi, (ha + hb - hab) / np.log(2), rtol=1e-9)
    assert float(entreg.matrix_mutual_information(a, b)) > 0.1
    independent = gauss(rng.normal(size=(30, 3)))
    assert float(entreg.matrix_mutual_information(a, independent)) < float(
        entreg.matrix_mutual_information(a, b)
    )


@pytest.mark.parametrize("shape", [(20, 6), (6, 20)])
def test_effective_rank_roy_vetterli(shape):
    x = np.random.default_rng(3).normal(size=shape)
    s = np.linalg.svd(x, compute_uv=False)
    p = s / s.sum()
    np.testing.assert_allclose(entreg.effective_rank(x), np.exp(-(p * np.log(p)).sum()), rtol=1e-9)
    np.testing.assert_allclose(entreg.effective_rank(np.eye(5)[:3]), 3.0, rtol=1e-12)
    np.testing.assert_allclose(entreg.effective_rank(np.outer(x[:, 0], x[0])), 1.0, rtol=1e-9)


@pytest.mark.parametrize("n, d", [(64, 8), (8, 64), (16, 16)])
def test_von_neumann_entropy_matches_oracle_both_shapes(n, d):
    x = np.random.default_rng(4).normal(size=(n, d))
    z = unit_rows(x)
    want = renyi_np(np.linalg.eigvalsh(z.T @ z / n), 1)
    np.testing.assert_allclose(entreg.von_neumann_entropy(x), want, rtol=1e-9)
    # Gram (N x N) and covariance (d x d) share the spectrum: Renyi orders agree with either.
    for q in (0.5, 2.0, math.inf):
        want = renyi_np(np.linalg.eigvalsh(z @ z.T / n), q)
        np.testing.assert_allclose(entreg.von_neumann_entropy(x, order=q), want, rtol=1e-8)


def test_von_neumann_entropy_analytic_cases():
    d = 8
    iso = np.tile(np.eye(d), (4, 1)) * 3.0  # isotropic, any row scale
    np.testing.assert_allclose(entreg.von_neumann_entropy(iso), np.log(d), rtol=1e-12)
    rank3 = np.tile(np.eye(d)[:3], (5, 1))
    np.testing.assert_allclose(entreg.von_neumann_entropy(rank3), np.log(3), rtol=1e-12)
    collapsed = np.tile(np.arange(1.0, d + 1), (10, 1))
    np.testing.assert_allclose(entreg.von_neumann_entropy(collapsed), 0.0, atol=1e-9)
    # Masked rows are left out, exactly as if absent; zero rows are left out too.
    x = np.random.default_rng(5).normal(size=(12, d))
    keep = np.arange(12) < 7
    np.testing.assert_allclose(
        entreg.von_neumann_entropy(x, where=keep), entreg.von_neumann_entropy(x[:7]), rtol=1e-10
    )
    padded = np.concatenate([x[:7], np.zeros((5, d))])
    np.testing.assert_allclose(
        entreg.von_neumann_entropy(padded), entreg.von_neumann_entropy(x[:7]), rtol=1e-10
    )
    # VS_1 under the cosine kernel is exp(VNE) exactly.
    np.testing.assert_allclose(entreg.vendi_score(x), np.exp(entreg.von_neumann_entropy(x)))


VENDI_Q = [0.5, 1.0, 2.0, 3.0, math.inf]


@pytest.mark.parametrize("q", VENDI_Q)
@pytest.mark.parametrize("n, d", [(40, 6), (6, 40)])
def test_vendi_matches_package_dual_and_kernel(q, n, d):
    x = np.random.default_rng(6).normal(size=(n, d))
    pq = "inf" if q == math.inf else q
    got = float(entreg.vendi_score(x, order=q))
    # For q < 1 the package counts the round-off eigenvalues (~1e-16) of whichever matrix is
    # rank-deficient, each adding ~1e-8 to sum p^q; entreg's eps drops them.
    rtol = 1e-6 if q < 1 else 1e-8
    np.testing.assert_allclose(got, vendi.score_dual(x, q=pq), rtol=rtol)
    z = unit_rows(x)
    np.testing.assert_allclose(got, vendi.score_K(z @ z.T, q=pq), rtol=rtol)
    assert 1 - 1e-9 <= got <= n + 1e-9


@pytest.mark.parametrize("q", VENDI_Q)
def test_vendi_kernel_and_weights_match_package(q):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(25, 2))
    k = np.exp(-((x[:, None] - x[None]) ** 2).sum(-1) / 2)
    p = rng.dirichlet(np.ones(25))
    pq = "inf" if q == math.inf else q
    rtol = 1e-6 if q < 1 else 1e-8  # round-off eigenvalues, as in the test above
    np.testing.assert_allclose(
        entreg.vendi_score(x, kernel=rbf, order=q), vendi.score_K(k, q=pq), rtol=rtol
    )
    want = vendi.score_K(k, q=pq, p=p)
    np.testing.assert_allclose(entreg.vendi_score_from_kernel(k, order=q, weights=p), want, rtol)
    # Unnormalized weights: the same score (the trace normalization absorbs the scale).
    np.testing.assert_allclose(
        entreg.vendi_score_from_kernel(k, order=q, weights=10 * p), want, rtol=rtol
    )
    # Cosine dual with weights equals the weighted Gram kernel.
    z = unit_rows(x)
    np.testing.assert_allclose(
        entreg.vendi_score(x, order=q, weights=p), vendi.score_K(z @ z.T, q=pq, p=p), rtol=rtol
    )


def test_vendi_readme_example_and_q2_frobenius():
    s = np.array([0, 0, 10, 10, 20, 20.0])
    k = np.exp(-np.abs(s[:, None] - s[None]))
    np.testing.assert_allclose(entreg.vendi_score_from_kernel(k), 2.9999, atol=1e-4)
    x = np.random.default_rng(8).normal(size=(30, 4))
    kk = np.exp(-((x[:, None] - x[None]) ** 2).sum(-1))
    np.testing.assert_allclose(
        entreg.vendi_score_from_kernel(kk, order=2), 30**2 / (kk**2).sum(), rtol=1e-12
    )


def naive_vne(x):
    """The peer implementation's pattern: eigenvectors in the graph and nansum of e log e."""
    z = x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    e, _ = jnp.linalg.eigh(z.T @ z / x.shape[0])
    return -jnp.nansum(e * jnp.log(e))


def degenerate_features():
    rng = np.random.default_rng(9)
    base = rng.normal(size=(3, 5))
    return {
        "duplicated rows": np.concatenate([base, base]),
        "N < d": rng.normal(size=(3, 8)),
        "axis aligned": np.eye(6)[:4],
        "identity": np.eye(5),
    }


@pytest.mark.parametrize("case", list(degenerate_features()))
def test_vne_gradients_finite_at_degenerate_inputs(case):
    @jax.jit
    def grads(f):
        return [
            jax.grad(functools.partial(fn, order=q))(f)
            for q in GRAD_ORDERS
            for fn in (entreg.von_neumann_entropy, entreg.vendi_score)
        ]

    for g in grads(jnp.asarray(degenerate_features()[case])):
        assert np.isfinite(np.asarray(g)).all()


def test_naive_vne_gradient_is_nan_where_ours_is_finite():
    x = jnp.asarray(degenerate_features()["axis aligned"])
    assert not np.isfinite(np.asarray(jax.grad(naive_vne)(x))).all()
    assert np.isfinite(np.asarray(jax.grad(entreg.von_neumann_entropy)(x))).all()


@pytest.mark.parametrize("q", [0.0, *GRAD_ORDERS, math.inf])
def test_matrix_gradients_finite_at_degenerate_spectra(q):
    n = 5
    for k in (jnp.eye(n) / n, jnp.ones((n, n)), jnp.zeros((n, n)), jnp.diag(jnp.arange(n) * 1.0)):
        g = jax.grad(lambda m: entreg.matrix_entropy(m, order=q))(k)
        assert np.isfinite(np.asarray(g)).all()
    # K = I / n is the maximum: zero gradient.
    np.testing.assert_allclose(jax.grad(entreg.matrix_entropy)(jnp.eye(n) / n), 0.0, atol=1e-12)


def test_custom_vjp_is_the_spectral_function_gradient():
    rng = np.random.default_rng(10)
    k = jnp.asarray(random_psd(rng, 6))
    ours = jax.grad(lambda m: entreg.matrix_entropy(m, order=1.5))(k)
    lam, v = np.linalg.eigh(k)
    p = lam / lam.sum()
    # d/dlambda of log(sum p^q) / (1 - q), p = lambda / sum(lambda).
    s = (p**1.5).sum()
    dp = 1.5 * p**0.5 / s / (1 - 1.5)
    dlam = (dp - (dp * p).sum()) / lam.sum()
    np.testing.assert_allclose(ours, v @ np.diag(dlam) @ v.T, rtol=1e-9, atol=1e-12)
    # ... and equals differentiating jnp.linalg.eigvalsh where that is defined.
    native = jax.grad(lambda m: entreg.spectral_entropy(jnp.linalg.eigvalsh(m), order=1.5))(k)
    np.testing.assert_allclose(ours, (native + native.T) / 2, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("q", [0.5, 1.0, 2.0])
def test_check_grads(q):
    rng = np.random.default_rng(11)
    x = jnp.asarray(rng.normal(size=(6, 4)))
    vne = jax.jit(lambda f: entreg.von_neumann_entropy(f, order=q))
    check_grads(vne, (x,), order=1, modes=["rev"])
    vendi_rbf = jax.jit(lambda f: entreg.log_vendi_score(f, kernel=rbf, order=q))
    check_grads(vendi_rbf, (x,), 1, modes=["rev"])
    k = jnp.asarray(random_psd(rng, 5))
    check_grads(jax.jit(lambda m: entreg.matrix_entropy(m, order=q)), (k,), 1, modes=["rev"])


def test_check_grads_dse_second_order_vne():
    x = jnp.asarray(np.random.default_rng(11).normal(size=(6, 4)))
    check_grads(jax.jit(entreg.von_neumann_entropy), (x,), order=2, modes=["rev"])
    dse = jax.jit(lambda f: entreg.diffusion_spectral_entropy(f, sigma=2.0))
    check_grads(dse, (x,), order=1, modes=["rev"])


def test_jit_vmap_batch_axes_and_bf16():
    x = np.random.default_rng(12).normal(size=(4, 10, 6))
    batched = entreg.vendi_score(x, order=2.0)
    looped = [entreg.vendi_score(s, order=2.0) for s in x]
    np.testing.assert_allclose(batched, looped, rtol=1e-10)
    np.testing.assert_allclose(
        jax.jit(jax.vmap(entreg.von_neumann_entropy))(x),
        [entreg.von_neumann_entropy(s) for s in x],
        rtol=1e-10,
    )
    np.testing.assert_allclose(
        jax.vmap(lambda s: entreg.vendi_score(s, kernel=rbf))(x),
        [entreg.vendi_score(s, kernel=rbf) for s in x],
        rtol=1e-10,
    )
    lo = entreg.von_neumann_entropy(jnp.asarray(x, jnp.bfloat16))
    assert lo.dtype == jnp.float32
    ref = entreg.von_neumann_entropy(jnp.asarray(x, jnp.bfloat16).astype(jnp.float64))
    np.testing.assert_allclose(lo, ref, rtol=1e-5)


def test_sharded_batch_of_sets_equals_unsharded():
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = jax.make_mesh((8,), ("sets",))
    x = np.random.default_rng(13).normal(size=(8, 16, 5))
    xs = jax.device_put(x, NamedSharding(mesh, PartitionSpec("sets")))
    for f in (entreg.von_neumann_entropy, lambda s: entreg.vendi_score(s, order=0.5)):
        np.testing.assert_allclose(jax.jit(f)(xs), f(x), rtol=1e-10)


def dse_np(z, sigma, t=1, drop_trivial=False):
    """Float64 oracle after the reference: eigenvalues of the random walk P = D^-1 G."""
    d2 = ((z[:, None] - z[None]) ** 2).sum(-1)
    g = np.exp(-d2 / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))
    p = g / g.sum(1, keepdims=True)
    lam = np.clip(np.sort(np.linalg.eigvals(p).real), 0, None)
    lam = np.where(lam > 1e-12 * lam.sum(), lam, 0.0)  # round-off of the whole spectrum
    if drop_trivial:
        lam = lam[:-1]
    if lam.sum() == 0:  # nothing but the trivial eigenvalue (constant data)
        return 0.0
    a = lam**t / (lam**t).sum()
    a = a[a > 1e-12]
    return float(-(a * np.log2(a)).sum())


def dsmi_np(key, z, labels, num_classes, repetitions, sigma, valid=None, uniform=False):
    """DSMI(Z; Y) = sum_c p(c) [mean_r DSE(R_{c,r}) - DSE(Z | Y = c)] (Liao, Liu et al. 2023),
    p(c) = n_c / N the EMPIRICAL class frequency over the valid rows. The random size-matched
    subsets R_{c,r} follow entreg's documented draw (the n_c valid rows with the smallest
    uniform scores of fold_in(key, c)); DSE is the float64 random-walk oracle above."""
    n = len(z)
    valid = np.ones(n, bool) if valid is None else valid
    total = 0.0
    for c in range(num_classes):
        rows = valid & (labels == c)
        n_c = int(rows.sum())
        if n_c == 0:
            continue
        scores = np.asarray(jax.random.uniform(jax.random.fold_in(key, c), (repetitions, n)))
        scores = np.where(valid, scores, 2.0)
        subsets = [np.argsort(s, kind="stable")[:n_c] for s in scores]
        random_dse = np.mean([dse_np(z[idx], sigma) for idx in subsets])
        p_c = 1.0 / num_classes if uniform else n_c / valid.sum()
        total += p_c * (random_dse - dse_np(z[rows], sigma))
    return total


@pytest.mark.parametrize("t, drop", [(1, False), (0.5, True)])
def test_dse_matches_random_walk_oracle(t, drop):
    z = np.random.default_rng(14).normal(size=(40, 3))
    got = entreg.diffusion_spectral_entropy(z, sigma=1.5, t=t, drop_trivial=drop, eps=1e-12)
    np.testing.assert_allclose(got, dse_np(z, 1.5, t, drop), rtol=1e-7)
    nats = entreg.diffusion_spectral_entropy(z, sigma=1.5, t=t, drop_trivial=drop, base=None)
    np.testing.assert_allclose(nats, got * np.log(2), rtol=1e-6)
    keep = np.arange(40) % 3 == 0
    np.testing.assert_allclose(
        entreg.diffusion_spectral_entropy(z, sigma=1.5, t=t, drop_trivial=drop, where=keep),
        entreg.diffusion_spectral_entropy(z[keep], sigma=1.5, t=t, drop_trivial=drop),
        rtol=1e-9,
    )


def test_dse_gradient_finite_with_duplicated_points():
    z = jnp.asarray(np.repeat(np.random.default_rng(15).normal(size=(5, 2)), 3, axis=0))
    g = jax.grad(lambda f: entreg.diffusion_spectral_entropy(f, sigma=1.0))(z)
    assert np.isfinite(np.asarray(g)).all()


def test_dsmi_matches_oracle_with_unbalanced_classes_and_padding():
    rng = np.random.default_rng(21)
    sizes = [3, 8, 19]
    labels = np.repeat(np.arange(3), sizes)
    centers = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    z = centers[labels] * (labels[:, None] != 2) + rng.normal(size=(30, 2)) * 0.6
    valid = rng.random(30) < 0.9
    key = jax.random.key(3)
    got = entreg.diffusion_spectral_mutual_information(
        key, z, labels, num_classes=3, repetitions=3, sigma=1.0, where=valid, eps=1e-12
    )
    want = dsmi_np(key, z, labels, 3, 3, 1.0, valid)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)
    # Uniform class weights would give a clearly different value on these classes.
    assert abs(want - dsmi_np(key, z, labels, 3, 3, 1.0, valid, uniform=True)) > 0.05
    with pytest.raises(ValueError, match="labels"):
        entreg.diffusion_spectral_mutual_information(key, z, labels + 1, num_classes=3)


def test_dse_of_constant_data_is_zero_with_the_trivial_eigenvalue_dropped():
    z = np.ones((12, 3))
    for drop in (False, True):
        assert float(entreg.diffusion_spectral_entropy(z, sigma=1.0, drop_trivial=drop)) == 0.0
        assert dse_np(z, 1.0, drop_trivial=drop) == 0.0


def test_dsmi_identities_and_signal():
    rng = np.random.default_rng(16)
    key = jax.random.key(0)
    z = rng.normal(size=(30, 2))
    one_class = np.zeros(30, np.int32)
    # A single class: every size-matched subset is the whole cloud, DSMI = 0 exactly.
    np.testing.assert_allclose(
        entreg.diffusion_spectral_mutual_information(key, z, one_class, num_classes=1),
        0.0,
        atol=1e-12,
    )
    labels = np.arange(30) % 3
    clustered = z * 0.2 + 5.0 * np.eye(2, 2)[labels % 2] * (labels[:, None] > 0)
    dsmi = jax.jit(
        lambda k, x, y: entreg.diffusion_spectral_mutual_information(
            k, x, y, num_classes=3, sigma=1.0
        )
    )
    informative = dsmi(key, clustered, labels)
    shuffled = dsmi(key, clustered, rng.permutation(labels))
    assert float(informative) > 0.5
    assert abs(float(shuffled)) < 0.25 * float(informative)
    # Reproducible from the key, jittable; an empty class contributes nothing.
    four = jax.jit(
        lambda k, x, y: entreg.diffusion_spectral_mutual_information(
            k, x, y, num_classes=4, sigma=1.0
        )
    )
    np.testing.assert_allclose(four(key, clustered, labels), four(key, clustered, labels))
    np.testing.assert_allclose(four(key, clustered, labels), informative, rtol=1e-10)


def test_stochastic_estimate_within_stated_error():
    rng = np.random.default_rng(17)
    a = random_psd(rng, 200, rank=50)
    # Diagonal: v^T f(A) v = tr f(A) for every Rademacher probe (no probe noise), and rank 4:
    # Lanczos breaks down after 4 steps with an exact quadrature, so the estimate is exact.
    low = np.diag(np.r_[rng.uniform(0.5, 2.0, 4), np.zeros(46)])
    orders = (0.5, 1.0, 2.0)

    @jax.jit
    def estimates(key):
        full = [
            entreg.stochastic_spectral_entropy(
                key, lambda v: a @ v, 200, order=q, num_probes=32, num_steps=30
            )
            for q in orders
        ]
        rank4 = [
            entreg.stochastic_spectral_entropy(key, lambda v: low @ v, 50, order=q) for q in orders
        ]
        return full, rank4

    full, rank4 = estimates(jax.random.key(0))
    for q, (est, se), (est_low, se_low) in zip(orders, full, rank4, strict=True):
        exact = float(entreg.matrix_entropy(a, order=q))
        assert 0 < float(se) < 0.05
        assert abs(float(est) - exact) < 4 * float(se) + 1e-3
        lam = np.diag(low)[:4] / np.trace(low)
        want = -np.sum(lam * np.log(lam)) if q == 1 else np.log(np.sum(lam**q)) / (1 - q)
        np.testing.assert_allclose(est_low, want, rtol=1e-10)
        assert float(se_low) < 1e-10


def test_terms_signs_and_gradients():
    x = jnp.asarray(np.random.default_rng(18).normal(size=(16, 4)))
    signals = {"features": x}
    vne = entreg.von_neumann_entropy(x)
    for term, sign in ((losses.vne_bonus(0.2), -1), (losses.vne_penalty(0.2), 1)):
        r = term.apply(signals, term.init(), None)
        np.testing.assert_allclose(r.value, vne)
        np.testing.assert_allclose(r.loss, sign * 0.2 * vne)
    term = losses.vendi_bonus(0.5, order=2.0)
    r = term.apply(signals, term.init(), None)
    np.testing.assert_allclose(r.loss, -0.5 * np.log(entreg.vendi_score(x, order=2.0)))
    # A bonus step raises the entropy.
    loss_fn = entreg.compose(lambda f: (0.0, {"features": f}), losses.vne_bonus(1.0))
    grad = jax.grad(lambda f: loss_fn(f, state=loss_fn.init(), step=0)[0])(x)
    assert float(entreg.von_neumann_entropy(x - 0.05 * grad)) > float(vne)
    with pytest.raises(KeyError, match="features"):
        term.apply({}, term.init(), None)


def test_errors_name_the_argument():
    x = np.ones((4, 3))
    with pytest.raises(ValueError, match="matrix"):
        entreg.matrix_entropy(np.ones((3, 4)))
    with pytest.raises(ValueError, match="order"):
        entreg.vendi_score(x, order=-1.0)
    with pytest.raises(TypeError, match="order"):
        entreg.spectral_entropy(np.ones(3), order="2")
    with pytest.raises(ValueError, match="eps"):
        entreg.matrix_entropy(np.eye(3), eps=2.0)
    with pytest.raises(ValueError, match="weights"):
        entreg.vendi_score(x, weights=np.array([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="weights"):
        entreg.vendi_score(x, weights=np.ones(3))
    with pytest.raises(TypeError, match="kernel"):
        entreg.vendi_score(x, kernel="rbf")
    with pytest.raises(ValueError, match="features"):
        entreg.von_neumann_entropy(np.ones(3))
    with pytest.raises(ValueError, match="sigma"):
        entreg.diffusion_spectral_entropy(x, sigma=0.0)
    with pytest.raises(ValueError, match="labels"):
        entreg.diffusion_spectral_mutual_information(
            jax.random.key(0), x, np.zeros(3, int), num_classes=2
        )
    with pytest.raises(ValueError, match="num_classes"):
        entreg.diffusion_spectral_mutual_information(
            jax.random.key(0), x, np.zeros(4, int), num_classes=0
        )
    with pytest.raises(ValueError, match="order"):
        entreg.stochastic_spectral_entropy(jax.random.key(0), lambda v: v, 4, order=math.inf)
    with pytest.raises(ValueError, match="base"):
        entreg.matrix_entropy(np.eye(3), base=1.0)
    with pytest.raises(ValueError, match="a"):
        entreg.joint_matrix_entropy(np.eye(3), np.eye(4))
    # Negative weights under jit: NaN, not a plausible number.
    f = jax.jit(lambda w: entreg.vendi_score(x, weights=w))
    assert np.isnan(float(f(jnp.array([1.0, -1.0, 1.0, 1.0]))))
