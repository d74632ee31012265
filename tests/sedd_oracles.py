"""Float64 numpy/scipy references for SEDD: rate matrices, brute-force denoising score entropy,
and exact concrete scores of a Markov chain under the forward process (by enumeration)."""

from __future__ import annotations

import functools
import itertools

import numpy as np
from scipy.linalg import expm


def rate_matrix(kind: str, n: int) -> np.ndarray:
    """Q with columns summing to 0: Q[x, y] is the rate from y into x."""
    if kind == "absorbing":
        q = np.zeros((n + 1, n + 1))
        q[np.arange(n), np.arange(n)] = -1.0
        q[n, :n] = 1.0
        return q
    return (np.ones((n, n)) - n * np.eye(n)) / n


@functools.lru_cache(maxsize=4096)
def transition(kind: str, n: int, sigma: float) -> np.ndarray:
    """P[y, x0] = p_sigma(y | x0) = expm(sigma Q)[y, x0] (cached: quadrature reuses nodes)."""
    p = expm(float(sigma) * rate_matrix(kind, n))
    p.setflags(write=False)
    return p


def brute_force_dse(kind: str, n: int, log_score, xt: int, x0: int, sigma: float) -> float:
    """sum_{y != xt} Q[xt, y] (s_y - r_y log s_y + K(r_y)) with r from the matrix exponential."""
    q = rate_matrix(kind, n)
    p = transition(kind, n, sigma)[:, x0]
    total = 0.0
    for y in range(q.shape[0]):
        if y == xt or q[xt, y] == 0.0:
            continue
        r = p[y] / p[xt]
        k = r * (np.log(r) - 1.0) if r > 0 else 0.0
        total += q[xt, y] * (np.exp(log_score[y]) - r * log_score[y] + k)
    return total


def sticky_chain(n: int = 4, stay: float = 0.7):
    """Uniform start, stay with probability ``stay``, else move to each other symbol equally."""
    trans = np.full((n, n), (1.0 - stay) / (n - 1))
    np.fill_diagonal(trans, stay)
    return np.full(n, 1.0 / n), trans


def chain_entropy(d: int, n: int = 4, stay: float = 0.7) -> float:
    _, trans = sticky_chain(n, stay)
    rate = -np.sum(trans[0] * np.log(trans[0]))
    return np.log(n) + (d - 1) * rate


def exact_scores(kind: str, n: int, d: int, sigma: float, stay: float = 0.7):
    """Every noised sequence x_t of length d with p_t(x_t), the exact log concrete scores
    log p_t(x_t with position i set to y) / p_t(x_t) [S, d, dim] and the posteriors
    p(x_0^i = a | x_t) [S, d, n], by forward-backward over the chain."""
    start, trans = sticky_chain(n, stay)
    emit = transition(kind, n, sigma)[:, :n].T  # [a, x]: p(x_t = x | x_0 = a)
    dim = emit.shape[1]
    xs = np.array(list(itertools.product(range(dim), repeat=d)))  # [S, d]
    e = emit[:, xs].transpose(1, 2, 0)  # [S, d, a]
    s = len(xs)
    prior = np.zeros((s, d, n))  # p(x_0^i = a, x_t^{<i})
    fwd = np.zeros((s, d, n))
    prior[:, 0] = start
    fwd[:, 0] = start * e[:, 0]
    for i in range(1, d):
        prior[:, i] = fwd[:, i - 1] @ trans
        fwd[:, i] = prior[:, i] * e[:, i]
    bwd = np.ones((s, d, n))  # p(x_t^{>i} | x_0^i = a)
    for i in range(d - 2, -1, -1):
        bwd[:, i] = (e[:, i + 1] * bwd[:, i + 1]) @ trans.T
    p_xt = fwd[:, -1].sum(-1)
    gamma = prior * bwd  # [S, d, a]: everything but the emission at i
    alt = gamma @ emit  # [S, d, y]: p_t(x_t with x_t^i = y)
    log_score = np.log(alt) - np.log(p_xt)[:, None, None]
    posterior = gamma * e / p_xt[:, None, None]
    return xs, p_xt, log_score, posterior
