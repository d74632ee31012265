"""Float64 re-statements of the decoding rules (test oracles only).

The processors follow HuggingFace transformers' logits warpers (logits_process.py @ 00857b6),
row by row with sorts, as HF writes them; `ties` then adds the tokens tied with the boundary,
which entreg keeps and HF leaves to its sort order (a no-op without ties). Mirostat follows
Basu et al. (2021), Algorithm 1, in plain Python floats.
"""

import math

import numpy as np


def log_probs(z):
    """z - logsumexp(z) over the finite logits (exact where p underflows), -inf elsewhere."""
    z = np.asarray(z, np.float64)
    valid = np.isfinite(z)
    if not valid.any():
        return np.full_like(z, -np.inf), valid
    m = z[valid].max()
    lse = m + np.log(np.exp(z[valid] - m).sum())
    return np.where(valid, z - lse, -np.inf), valid


def probs(z):
    lp, valid = log_probs(z)
    return np.exp(lp), valid


def entropy(z):
    p, _ = probs(z)
    nz = p > 0
    return float(-(p[nz] * np.log(p[nz])).sum())


def ties(keep, score, valid):
    """Adds every valid token whose score equals the lowest kept score."""
    if not keep.any():
        return keep
    return keep | (valid & (score == score[keep].min()))


def top_m(z, m):
    """HF's re-admission of the m highest logits (ties with the m-th included)."""
    valid = np.isfinite(z)
    kth = np.sort(np.where(valid, z, -np.inf))[::-1][min(m, z.size) - 1]
    return valid & (z >= kth)


def top_k(z, k, m=1):
    k = min(max(k, m), z.size)
    kth = np.sort(z)[::-1][k - 1]
    return np.isfinite(z) & ~(z < kth)


def top_p(z, p, m=1):
    pr, valid = probs(z)
    if p >= 1:
        return valid
    order = np.argsort(pr, kind="stable")  # ascending
    cum = np.cumsum(pr[order])
    remove = cum <= 1 - p
    keep = np.zeros(z.size, bool)
    keep[order[~remove]] = True
    keep &= valid
    # HF's `remove[-m:] = False` re-admits the m most probable: `top_m`, with its ties.
    return ties(keep, pr, valid) | top_m(z, m)


def typical_p(z, mass, m=1):
    lp, valid = log_probs(z)
    pr = np.exp(lp)
    if mass >= 1:
        return valid
    ent = entropy(z)
    shifted = np.where(valid, np.abs(-lp - ent), np.inf)
    order = np.argsort(shifted, kind="stable")
    cum = np.cumsum(pr[order])
    last = min(int((cum < mass).sum()), z.size - 1)
    remove = shifted > shifted[order][last]
    remove[order[:m]] = False
    keep = valid & ~remove
    m_th = np.sort(shifted)[min(m, z.size) - 1]  # the m most typical, ties included
    return keep | (valid & (shifted <= m_th))


def epsilon_cutoff(z, eps, m=1):
    pr, valid = probs(z)
    return valid & ~((pr < eps) & ~top_m(z, m))


def eta_cutoff(z, eps, m=1):
    pr, valid = probs(z)
    eta = min(eps, math.sqrt(eps) * math.exp(-entropy(z)))
    return valid & ~((pr < eta) & ~top_m(z, m))


def min_p(z, p_min, m=1):
    pr, valid = probs(z)
    remove = pr < p_min * pr.max()
    # HF sorts the float probabilities, where underflowed ones tie: the logits give the order.
    order = np.argsort(-np.asarray(z), kind="stable")
    remove[order[:m]] = False
    return valid & ~remove | top_m(z, m)


def renormalized(z, keep):
    """The truncated distribution q: p restricted to `keep`, renormalized."""
    pr, _ = probs(z)
    q = np.where(keep, pr, 0.0)
    return q / q.sum()


def zipf_fit(z, m=100):
    """s_hat = sum t_i b_i / sum t_i^2 over the top m probabilities (Algorithm 1)."""
    pr = sorted((x for x in probs(z)[0] if x > 0), reverse=True)[:m]
    num = den = 0.0
    for i in range(1, len(pr)):
        t = math.log((i + 1) / i)
        b = math.log(pr[i - 1] / pr[i])
        num += t * b
        den += t * t
    return num / den if den else 0.0


def mirostat_v1_k(z, mu, m=100):
    """k = (eps 2^mu / (1 - N^-eps))^(1/s_hat), truncated to an int in [1, N]."""
    n = int(np.isfinite(z).sum())
    s = zipf_fit(z, m)
    if n <= 1:
        return 1, s
    eps = s - 1
    g = math.log(n) if eps == 0 else (1 - n ** (-eps)) / eps
    try:
        k = (eps * 2**mu / (1 - n ** (-eps))) ** (1 / s) if eps else (2**mu / g) ** (1 / s)
    except (OverflowError, ZeroDivisionError):
        k = n if 2**mu > g else 1
    return min(max(int(k), 1), n), s


def mirostat_v2_keep(z, mu):
    pr, valid = probs(z)
    keep = valid & (-np.log2(np.where(valid, pr, 1.0)) <= mu)
    return keep | (valid & (pr == pr.max()))


def mirostat_update(mu, surprise_bits, tau, eta):
    return mu - eta * (surprise_bits - tau)
