"""Gaussian closed forms (entreg.gaussian), O-information (entreg.o_information), discrete
plug-in / Miller-Madow (entreg.discrete) and embedding entropies (entreg.embedding_entropy)
against numpy log-dets, scikit-learn and the sheet's oracles."""

import math

import jax
import jax.numpy as jnp
import mi_oracles as oracle
import numpy as np
import pytest
from scipy import special
from sklearn.metrics import mutual_info_score

import entreg

RNG = np.random.default_rng(0)
A = RNG.normal(size=(5, 5))
COV = A @ A.T + 0.5 * np.eye(5)
LN2 = math.log(2)


def equicorrelated(n, rho):
    return np.full((n, n), rho) + (1 - rho) * np.eye(n)


def test_gaussian_closed_forms_against_numpy_logdets():
    logdet = lambda c: np.linalg.slogdet(c)[1]  # noqa: E731
    np.testing.assert_allclose(entreg.gaussian_entropy(COV), oracle.gaussian_entropy(COV), 1e-13)
    mi = 0.5 * (logdet(COV[:2, :2]) + logdet(COV[2:, 2:]) - logdet(COV))
    np.testing.assert_allclose(entreg.gaussian_mutual_information(COV, 2), mi, rtol=1e-12)
    tc = 0.5 * (np.sum(np.log(np.diag(COV))) - logdet(COV))
    np.testing.assert_allclose(entreg.gaussian_total_correlation(COV), tc, rtol=1e-12)
    omega = 1.5 * logdet(COV) + sum(
        0.5 * math.log(COV[j, j]) - 0.5 * logdet(np.delete(np.delete(COV, j, 0), j, 1))
        for j in range(5)
    )
    np.testing.assert_allclose(entreg.gaussian_o_information(COV), omega, rtol=1e-12)
    # Multivariate groups; batched covariances; bits.
    groups = [[0, 1], [2], [3, 4]]
    tc_g = 0.5 * (logdet(COV[:2, :2]) + logdet(COV[2:3, 2:3]) + logdet(COV[3:, 3:]) - logdet(COV))
    np.testing.assert_allclose(entreg.gaussian_total_correlation(COV, groups), tc_g, rtol=1e-12)
    batch = np.stack([COV, equicorrelated(5, 0.3)])
    np.testing.assert_allclose(
        entreg.gaussian_entropy(batch, base=2), [oracle.gaussian_entropy(c) / LN2 for c in batch]
    )
    # Staircase: -(d/2) log(1 - rho^2) for y = rho x + sqrt(1 - rho^2) eps in d dimensions.
    rho, d = 0.7, 4
    joint = np.block([[np.eye(d), rho * np.eye(d)], [rho * np.eye(d), np.eye(d)]])
    np.testing.assert_allclose(
        entreg.gaussian_mutual_information(joint, d), -d / 2 * math.log(1 - rho**2), rtol=1e-12
    )


def test_o_information_oracles():
    """Sheet tables (equicorrelated R) and identities: Omega = TC - DTC, S = TC + DTC =
    sum_j I(X_j; X_-j), Omega = 0 for n = 2, co-information for n = 3."""
    for n, rho, omega, tc in ((3, 0.5, 0.084950, 0.346574), (4, 0.3, 0.058522, 0.214085)):
        r = equicorrelated(n, rho)
        np.testing.assert_allclose(entreg.gaussian_o_information(r), omega, atol=1e-6)
        np.testing.assert_allclose(entreg.gaussian_total_correlation(r), tc, atol=1e-6)
    np.testing.assert_allclose(
        entreg.gaussian_o_information(equicorrelated(5, 0.6)), 0.636051, atol=1e-6
    )

    def h(cols):
        c = list(cols)
        return oracle.gaussian_entropy(COV[np.ix_(c, c)])

    info = entreg.multivariate_information(h, 5)
    np.testing.assert_allclose(info.o_information, entreg.gaussian_o_information(COV), rtol=1e-12)
    np.testing.assert_allclose(
        info.o_information, info.total_correlation - info.dual_total_correlation, rtol=1e-12
    )
    s_info = sum(
        float(entreg.gaussian_mutual_information(COV[np.ix_(o, o)], 1))
        for o in ([j] + [i for i in range(5) if i != j] for j in range(5))
    )
    np.testing.assert_allclose(info.s_information, s_info, rtol=1e-12)
    np.testing.assert_allclose(entreg.multivariate_information(h, 2).o_information, 0, atol=1e-13)
    co = h([0]) + h([1]) + h([2]) - h([0, 1]) - h([0, 2]) - h([1, 2]) + h([0, 1, 2])
    np.testing.assert_allclose(entreg.multivariate_information(h, 3).o_information, co, rtol=1e-12)


def test_xor_and_copy_triples():
    bits = RNG.integers(0, 2, size=(1024, 2))
    xor = np.c_[bits, bits[:, 0] ^ bits[:, 1]]
    copy = np.repeat(bits[:, :1], 3, axis=1)
    entropy_bits = jax.jit(lambda d: entreg.discrete_entropy(d, base=2))
    for data, omega, tc in ((xor, -1.0, 1.0), (copy, 1.0, 2.0)):
        info = entreg.multivariate_information(lambda c, d=data: entropy_bits(d[:, list(c)]), 3)
        np.testing.assert_allclose(info.o_information, omega, atol=0.01)
        np.testing.assert_allclose(info.total_correlation, tc, atol=0.01)
    # (kNN entropies on Gaussian redundancy / synergy: experiments/mi_staircase.py, claim 6.)


def test_discrete_plugin_and_miller_madow():
    x, y = RNG.integers(0, 4, size=200), RNG.integers(0, 5, size=200)
    plug = entreg.discrete_mutual_information(x, y)
    np.testing.assert_allclose(plug, mutual_info_score(x, y), rtol=1e-13)
    hx, mx = oracle.plugin_entropy(x)
    hy, my = oracle.plugin_entropy(y)
    hxy, mxy = oracle.plugin_entropy(np.c_[x, y])
    np.testing.assert_allclose(plug, hx + hy - hxy, rtol=1e-12)
    mm = entreg.discrete_mutual_information(x, y, correction="miller_madow")
    np.testing.assert_allclose(mm, plug + (mx + my - mxy - 1) / 400, rtol=1e-12)
    np.testing.assert_allclose(
        entreg.discrete_entropy(x, correction="miller_madow"), hx + (mx - 1) / 400, rtol=1e-13
    )
    # Any integer labels (no value range), masks, bits; independent labels: MM removes the bias.
    big = x * 10**6 - 7
    where = RNG.random(200) > 0.3
    np.testing.assert_allclose(
        entreg.discrete_mutual_information(big, y, where=where, base=2),
        mutual_info_score(x[where], y[where]) / LN2,
        rtol=1e-12,
    )
    ind_x, ind_y = RNG.integers(0, 4, size=(2, 40, 200))
    both = jax.jit(
        jax.vmap(
            lambda a, b: (
                entreg.discrete_mutual_information(a, b),
                entreg.discrete_mutual_information(a, b, correction="miller_madow"),
            )
        )
    )
    plug_mean, mm_mean = (float(v.mean()) for v in both(ind_x, ind_y))
    np.testing.assert_allclose(plug_mean, 9 / 400, rtol=0.3)  # (m_x - 1)(m_y - 1) / 2N
    assert abs(mm_mean) < 0.2 * plug_mean
    assert entreg.discrete_entropy(x, where=np.zeros(200, bool)) == 0
    jitted = jax.jit(entreg.discrete_mutual_information)(x, y)
    np.testing.assert_allclose(jitted, plug, rtol=1e-13)


def test_vmf_log_normalizer_against_series_and_scipy():
    for d in (1, 3, 10, 64, 99, 100, 128, 1000):
        nu = d / 2 - 1
        log_i = oracle.log_bessel_i(nu, 10.0)
        if d <= 128:  # scipy's ive underflows beyond
            np.testing.assert_allclose(log_i, math.log(special.ive(nu, 10.0)) + 10.0, rtol=1e-12)
        ref = nu * math.log(10.0) - d / 2 * math.log(2 * math.pi) - log_i
        np.testing.assert_allclose(entreg.vmf_log_normalizer(d, 10.0), ref, rtol=1e-11)
    # Sheet: log I_nu(10) = -99.23 at d = 128 and -1801.96 at d = 1000 (ER's floor: -16.12).
    np.testing.assert_allclose(oracle.log_bessel_i(63, 10.0), -99.23, atol=0.01)
    np.testing.assert_allclose(oracle.log_bessel_i(499, 10.0), -1801.96, atol=0.01)
    np.testing.assert_allclose(
        entreg.vmf_log_normalizer(7, 300.0),
        2.5 * math.log(300) - 3.5 * math.log(2 * math.pi) - oracle.log_bessel_i(2.5, 300.0, 2000),
        rtol=1e-12,
    )


def test_embedding_entropies():
    u = RNG.uniform(size=(256, 3))
    where = RNG.random(256) > 0.25
    out = jax.jit(
        lambda a, w: {
            "h": entreg.m_spacing_entropy(a),
            "m5": entreg.m_spacing_entropy(a, m=5),
            "eps0": entreg.m_spacing_entropy(a, eps=0.0),
            "affine": entreg.m_spacing_entropy(3.0 * a + 2.0, eps=0.0),
            "masked": entreg.m_spacing_entropy(jnp.where(w[:, None], a, jnp.nan), where=w),
            "grad": jax.grad(lambda b: entreg.m_spacing_entropy(b).sum())(a),
        }
    )(u, where)
    np.testing.assert_allclose(out["h"], [oracle.m_spacing(u[:, j]) for j in range(3)], 1e-12)
    np.testing.assert_allclose(out["m5"], [oracle.m_spacing(u[:, j], 5) for j in range(3)], 1e-12)
    # Shift invariance and scale equivariance (eps = 0).
    np.testing.assert_allclose(out["affine"], out["eps0"] + math.log(3), rtol=1e-12)
    masked_ref = [oracle.m_spacing(u[where, j]) for j in range(3)]
    np.testing.assert_allclose(out["masked"], masked_ref, rtol=1e-12)
    assert np.all(np.isfinite(out["grad"]))
    # vMF KDE entropy from its definition.
    z = RNG.normal(size=(20, 6))
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    log_p = special.logsumexp(10.0 * zn @ zn.T, axis=1) - math.log(20)
    ref = -np.mean(log_p + entreg.vmf_log_normalizer(6, 10.0))
    np.testing.assert_allclose(entreg.vmf_kde_entropy(z), ref, rtol=1e-12)
    keep = np.arange(20) % 4 != 0
    zk = zn[keep]
    log_pk = special.logsumexp(3.0 * zk @ zk.T, axis=1) - math.log(keep.sum())
    np.testing.assert_allclose(
        entreg.vmf_kde_entropy(np.where(keep[:, None], z, np.nan), kappa=3.0, where=keep),
        -np.mean(log_pk + entreg.vmf_log_normalizer(6, 3.0)),
        rtol=1e-12,
    )


def test_not_positive_definite():
    with pytest.raises(ValueError, match="`cov`"):
        entreg.gaussian_entropy(np.diag([1.0, -1.0]))
    assert np.isnan(jax.jit(entreg.gaussian_entropy)(jnp.diag(jnp.array([1.0, -1.0]))))


@pytest.mark.parametrize(
    "call,exc,arg",
    [
        (lambda: entreg.gaussian_entropy(np.zeros((2, 3))), ValueError, "cov"),
        (lambda: entreg.gaussian_mutual_information(COV, 5), ValueError, "split"),
        (lambda: entreg.gaussian_total_correlation(COV, [[0, 1], [1, 2]]), ValueError, "groups"),
        (lambda: entreg.gaussian_o_information(COV, [[0], [7]]), ValueError, "groups"),
        (lambda: entreg.gaussian_o_information(COV, [[0, 1, 2, 3, 4]]), ValueError, "groups"),
        (lambda: entreg.multivariate_information(3, 3), TypeError, "entropy_of"),
        (lambda: entreg.multivariate_information(lambda c: 0.0, "ab"), TypeError, "groups"),
        (lambda: entreg.discrete_entropy(np.zeros(3)), TypeError, "labels"),
        (
            lambda: entreg.discrete_mutual_information(np.zeros(3, int), np.zeros(4, int)),
            ValueError,
            "x",
        ),
        (
            lambda: entreg.discrete_entropy(np.zeros(3, int), correction="mm"),
            ValueError,
            "correction",
        ),
        (lambda: entreg.m_spacing_entropy(np.zeros((4, 2)), m=4), ValueError, "m"),
        (lambda: entreg.m_spacing_entropy(np.zeros(4)), ValueError, "x"),
        (lambda: entreg.vmf_log_normalizer(3, 0.0), ValueError, "kappa"),
        (lambda: entreg.vmf_log_normalizer(0, 1.0), ValueError, "dim"),
        (lambda: entreg.vmf_kde_entropy(np.zeros(3)), ValueError, "z"),
    ],
)
def test_bad_input_names_the_argument(call, exc, arg):
    with pytest.raises(exc, match=f"`{arg}`"):
        call()
