"""Independent float64 reference implementations (numpy / scipy), used only by the tests."""

import jax.numpy as jnp
import numpy as np
from scipy import special, stats


def softmax(z, valid=None):
    z = np.asarray(z, np.float64)
    valid = np.isfinite(z) if valid is None else (valid & np.isfinite(z))
    if not valid.any():
        return np.zeros_like(z)
    m = z[valid].max()
    e = np.where(valid, np.exp(np.where(valid, z - m, 0.0)), 0.0)
    return e / e.sum()


def entropy(p):
    return float(stats.entropy(p)) if p.sum() > 0 else 0.0


def kl(p, q):
    return float(special.rel_entr(p, q).sum())


def js(p, q):
    m = (p + q) / 2
    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def renyi(p, a, support=None):
    """`support`: number of categories with a finite logit (float64 p may underflow to 0)."""
    if a == 0 and support is not None:
        return float(np.log(support)) if support else 0.0
    p = p[p > 0]
    if p.size == 0:
        return 0.0
    if a == 1:
        return float(-(p * np.log(p)).sum())
    if np.isinf(a):
        return float(-np.log(p.max()))
    return float(np.log((p**a).sum()) / (1 - a))


def tsallis(p, q, support=None):
    if q == 0 and support is not None:
        return float(max(support - 1, 0))
    p = p[p > 0]
    if p.size == 0:
        return 0.0
    if q == 1:
        return float(-(p * np.log(p)).sum())
    if np.isinf(q):
        return 0.0
    return float((1 - (p**q).sum()) / (q - 1))


def f_divergence(p, q, kind, alpha=None):
    """D_f(p||q) = sum q f(p/q) with the perspective limits at q = 0, from the generator f."""
    if kind == "kl":
        return kl(p, q)
    if kind == "reverse_kl":
        return kl(q, p)
    if kind == "js":
        return js(p, q)
    if kind == "squared_hellinger":
        return float(((np.sqrt(p) - np.sqrt(q)) ** 2).sum())
    if kind == "total_variation":
        return float(0.5 * np.abs(p - q).sum())
    if kind == "chi2":
        if np.any((q == 0) & (p > 0)):
            return np.inf
        s = q > 0
        return float(((p[s] - q[s]) ** 2 / q[s]).sum())
    a = alpha
    if a == 1:
        return kl(p, q)
    if a == 0:
        return kl(q, p)
    both = (p > 0) & (q > 0)
    if (a > 1 and np.any((q == 0) & (p > 0))) or (a < 0 and np.any((p == 0) & (q > 0))):
        return np.inf
    s = (p[both] ** a * q[both] ** (1 - a)).sum()
    return float((s - 1) / (a * (a - 1)))


def aggregate(values, mask, mode, num_tokens=None, num_sequences=None, norm_constant=None):
    v = np.asarray(values, np.float64).reshape(-1, values.shape[-1])
    m = np.asarray(mask, np.float64).reshape(-1, values.shape[-1])
    sums = (v * m).sum(-1)
    counts = m.sum(-1)
    if mode == "token-mean":
        n = counts.sum() if num_tokens is None else num_tokens
        return 0.0 if n == 0 else sums.sum() / n
    s = (counts > 0).sum() if num_sequences is None else num_sequences
    if mode == "seq-mean-token-sum":
        per = sums
    elif mode == "seq-mean-token-mean":
        per = np.array([a / c if c > 0 else 0.0 for a, c in zip(sums, counts, strict=True)])
    else:
        per = sums / (v.shape[-1] if norm_constant is None else norm_constant)
    return 0.0 if s == 0 else per.sum() / s


def bf16(*xs):
    """Inputs rounded to bfloat16 (for kernels that take 16-bit operands only)..."""
    return tuple(jnp.asarray(x, jnp.bfloat16) for x in xs)


def f64(*xs):
    """...and their exact float64 values, which the float64 oracles then take."""
    return tuple(np.asarray(x, np.float64) for x in xs)
