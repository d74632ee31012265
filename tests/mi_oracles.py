"""Float64 numpy / scipy references for the mutual-information family, written from the papers
(explicit sums and loops over pairs), used only by the tests."""

from collections import Counter

import numpy as np
from scipy import special


def _sets(s, positives=None, valid=None):
    s = np.asarray(s, np.float64)
    n, m = s.shape
    pos = np.eye(n, m, dtype=bool) if positives is None else np.asarray(positives, bool)
    valid = np.ones_like(pos) if valid is None else np.asarray(valid, bool)
    return s, pos & valid, ~pos & valid, valid


def lme(values):
    values = np.asarray(values, np.float64)
    return special.logsumexp(values) - np.log(values.size)


def nwj(s, positives=None, valid=None):
    s, p, q, _ = _sets(s, positives, valid)
    return s[p].mean() - np.exp(-1.0) * np.exp(s[q]).mean()


def tuba(s, log_a, positives=None, valid=None):
    s, p, q, _ = _sets(s, positives, valid)
    shifted = s - np.asarray(log_a)[None, :]
    return 1.0 + shifted[p].mean() - np.exp(shifted[q]).mean()


def dv(s, positives=None, valid=None):
    s, p, q, _ = _sets(s, positives, valid)
    return s[p].mean() - lme(s[q])


def infonce(s, positives=None, valid=None, direction="rows"):
    s, p, _, valid = _sets(s, positives, valid)
    if direction == "both":
        return 0.5 * (infonce(s, p, valid, "rows") + infonce(s, p, valid, "columns"))
    if direction == "columns":
        s, p, valid = s.T, p.T, valid.T
    terms = []
    for i, j in zip(*np.nonzero(p), strict=True):
        row = s[i][valid[i]]
        terms.append(s[i, j] - lme(row))
    return float(np.mean(terms))


def js_objective(s, positives=None, valid=None):
    s, p, q, _ = _sets(s, positives, valid)
    return -np.logaddexp(0, -s[p]).mean() - np.logaddexp(0, s[q]).mean()


def smile(s, tau, positives=None, valid=None):
    s, p, q, _ = _sets(s, positives, valid)
    inner = np.exp(s[q]) if tau is None else np.clip(np.exp(s[q]), np.exp(-tau), np.exp(tau))
    return s[p].mean() - np.log(inner.mean())


def interpolated(s, log_q, alpha_logit, valid=None):
    """Poole et al.'s I_alpha from the definition, with explicit leave-one-out sums."""
    s = np.asarray(s, np.float64)
    n = s.shape[0]
    keep = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    idx = np.nonzero(keep)[0]
    k = len(idx) - 1
    alpha = 1.0 / (1.0 + np.exp(-alpha_logit))

    def log_a(j, held_out):  # baseline of y_j without x_held_out
        others = [i for i in idx if i != held_out]
        mean = np.mean([np.exp(s[i, j]) for i in others])
        return np.log(alpha * mean + (1 - alpha) * np.exp(log_q[j]))

    joint = [s[j, j] - log_a(j, kk) for j in idx for kk in idx if kk != j]
    marginal = [np.exp(s[i, j] - log_a(j, j)) for j in idx for i in idx if i != j]
    assert len(joint) == len(marginal) == (k + 1) * k
    return 1.0 + np.mean(joint) - np.mean(marginal)


def ksg(variables, k=3, variant=1):
    """Brute-force KSG (max-norm) total correlation of m variables [N, d_l]."""
    vs = [np.asarray(v, np.float64).reshape(len(v), -1) for v in variables]
    n, m = len(vs[0]), len(vs)
    dists = [np.max(np.abs(v[:, None, :] - v[None, :, :]), axis=-1) for v in vs]
    for d in dists:
        np.fill_diagonal(d, np.inf)
    joint = np.max(dists, axis=0)
    total = 0.0
    for i in range(n):
        order = np.argsort(joint[i], kind="stable")[:k]
        if variant == 1:
            eps = joint[i, order[-1]]
            total += sum(special.digamma(np.sum(d[i] < eps) + 1) for d in dists)
        else:
            total += sum(special.digamma(np.sum(d[i] <= d[i, order].max())) for d in dists)
    if variant == 1:
        const = special.digamma(k) + (m - 1) * special.digamma(n)
    else:
        const = special.digamma(k) - (m - 1) / k + (m - 1) * special.digamma(n)
    return const - total / n


def kl_entropy(x, k=3, norm="max"):
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    n, d = x.shape
    diff = x[:, None, :] - x[None, :, :]
    dist = np.abs(diff).max(-1) if norm == "max" else np.sqrt((diff**2).sum(-1))
    np.fill_diagonal(dist, np.inf)
    r = np.sort(dist, axis=1)[:, k - 1]
    log_v = d * np.log(2) if norm == "max" else d / 2 * np.log(np.pi) - special.gammaln(d / 2 + 1)
    return special.digamma(n) - special.digamma(k) + log_v + d * np.mean(np.log(r))


def gaussian_entropy(cov):
    return 0.5 * np.linalg.slogdet(2 * np.pi * np.e * np.asarray(cov, np.float64))[1]


def plugin_entropy(rows):
    counts = np.array(list(Counter(map(tuple, np.asarray(rows).reshape(len(rows), -1))).values()))
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum()), len(counts)


def log_bessel_i(nu, x, terms=400):
    """log I_nu(x) by its power series, summed in log space (any nu > -1, moderate x)."""
    k = np.arange(terms)
    t = (2 * k + nu) * np.log(x / 2) - special.gammaln(k + 1) - special.gammaln(k + nu + 1)
    return special.logsumexp(t)


def m_spacing(u, m=None, eps=1e-7):
    """E2MC's m-spacing entropy of one coordinate, from the sorted sample."""
    u = np.sort(np.asarray(u, np.float64))
    n = len(u)
    m = int(np.round(np.sqrt(n))) if m is None else m
    gaps = u[m:] - u[: n - m]
    return float(np.mean(np.log((n + 1) / m * gaps + eps)))


def staircase(n, rho, dim, rng):
    x = rng.normal(size=(n, dim))
    return x, rho * x + np.sqrt(1 - rho**2) * rng.normal(size=(n, dim))


def log_ratio(x, y, rho):
    """log p(y | x) / p(y) of the correlated-Gaussian staircase, all pairs [N, N]."""
    v = 1 - rho**2
    quad = ((y[None, :, :] - rho * x[:, None, :]) ** 2).sum(-1)
    return -0.5 * quad / v - 0.5 * x.shape[1] * np.log(v) + 0.5 * (y**2).sum(-1)[None, :]
