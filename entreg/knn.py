r"""Nearest-neighbour estimators: KSG mutual information / total correlation and
Kozachenko-Leonenko entropy.

kNN search runs on the accelerator without a Python loop: query points are taken ``block_size``
at a time (``jax.lax.map``) against all N points, so memory is O(N block_size) per variable,
never O(N^2). Distances are computed from coordinate differences (not the |a|^2 + |b|^2 - 2ab
expansion), so ties and duplicates are exact, which strict counts need.

KSG (Kraskov, Stoegbauer, Grassberger, PRE 69, 066138, 2004), max-norm in every subspace and
joint space z = (x, y), k-th neighbour of z_i at joint distance eps_i (self excluded):

    KSG-1:  I = psi(k) + psi(N) - < psi(n_x + 1) + psi(n_y + 1) >,
            n_x(i) = #{j != i : ||x_j - x_i|| < eps_i}            (strict)
    KSG-2:  I = psi(k) - 1/k + psi(N) - < psi(n_x) + psi(n_y) >,
            n_x(i) = #{j != i : ||x_j - x_i|| <= eps_x(i)},      eps_x(i) = max x-distance
                                                                 among the k joint neighbours

and for m variables (total correlation) psi(k) + (m - 1) psi(N) - <sum_l psi(n_l + 1)>
(KSG-2: psi(k) - (m - 1)/k + (m - 1) psi(N) - <sum_l psi(n_l)>). The estimates are biased
toward 0 at large I and in high dimension (they need samples exponential in I; Gao, Ver Steeg &
Galstyan 2015), and not invariant to rescaling x against y: preprocessing is part of the
estimator. Ties break strict counting; scikit-learn's ``mutual_info_regression`` standardizes
each column and adds a tie-breaking jitter relative to the data scale (``standardize=True``,
``key=``; see `ksg_mutual_information`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma

from entreg import _checks, _masked
from entreg._typing import ArrayLike, Bool, Float, PRNGKeyArray, Scalar

_NORMS = ("max", "euclidean")


def _points(x, name: str) -> jax.Array:
    x = _checks.float_array(x, name)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"`{name}` must be samples [N] or [N, d], got shape {x.shape}.")
    return x


def _check_k(k, n: int) -> int:
    k = _checks.positive_int(k, "k")
    if k >= n:
        raise ValueError(f"`k` must be < the number of samples N = {n}, got k = {k}.")
    return k


def _preprocess(v: jax.Array, valid: jax.Array, standardize: bool, key) -> jax.Array:
    """scikit-learn's recipe: columns divided by their population std (no centring; constant
    columns kept), then + 1e-10 max(1, mean|column|) N(0, 1) when a key is given."""
    n = jnp.maximum(jnp.sum(valid), 1).astype(v.dtype)
    if standardize:
        mu = jnp.sum(jnp.where(valid[:, None], v, 0.0), axis=0) / n
        var = jnp.sum(jnp.where(valid[:, None], (v - mu) ** 2, 0.0), axis=0) / n
        std = jnp.sqrt(var)
        v = v / jnp.where(std > 0, std, 1.0)
    if key is not None:
        scale = jnp.maximum(1.0, jnp.sum(jnp.where(valid[:, None], jnp.abs(v), 0.0), 0) / n)
        v = v + 1e-10 * scale * jax.random.normal(key, v.shape, v.dtype)
    return v


def _distances(q: jax.Array, x: jax.Array, norm: str) -> jax.Array:
    """[B, N] distances between query rows q [B, d] and points x [N, d]."""
    diff = q[:, None, :] - x[None, :, :]
    if norm == "max":
        return jnp.max(jnp.abs(diff), axis=-1)
    return jnp.sqrt(jnp.sum(diff * diff, axis=-1))


def _top_k(x: jax.Array, k: int):
    """jax.lax.top_k, kept as a TopK: XLA CPU rewrites a top_k whose outputs are sliced into a
    full sort of each row (10x slower at N = 2000), which the barrier prevents."""
    return jax.lax.optimization_barrier(jax.lax.top_k(x, k))


def _blockwise(fn, n: int, block: int):
    """Concatenated ``fn(rows)`` over query blocks of ``block`` rows (indices past n clamped;
    the caller drops them)."""
    blocks = -(-n // block)
    rows = jnp.minimum(jnp.arange(blocks * block).reshape(blocks, block), n - 1)
    out = jax.lax.map(fn, rows)
    return jax.tree.map(lambda a: a.reshape(blocks * block, *a.shape[2:])[:n], out)


def _ksg_counts(variables, valid, k: int, variant: int, block: int):
    """Per point, counts n_l [N, m] of the KSG variant (self and invalid points excluded)."""
    n = variables[0].shape[0]
    cols = jnp.arange(n)

    def rows(idx):
        excluded = (idx[:, None] == cols[None, :]) | ~valid[None, :]
        dists = [jnp.where(excluded, jnp.inf, _distances(v[idx], v, "max")) for v in variables]
        joint = dists[0]
        for d in dists[1:]:
            joint = jnp.maximum(joint, d)
        neg_top, nearest = _top_k(-joint, k)
        if variant == 1:
            eps = -neg_top[:, -1:]
            return jnp.stack([jnp.sum(d < eps, axis=-1) for d in dists], axis=-1)
        radii = [
            jnp.max(jnp.take_along_axis(d, nearest, axis=-1), -1, keepdims=True) for d in dists
        ]
        return jnp.stack(
            [jnp.sum(d <= r, axis=-1) for d, r in zip(dists, radii, strict=True)], axis=-1
        )

    return _blockwise(rows, n, block)


def ksg_total_correlation(
    variables: Sequence[Float[ArrayLike, "n ..."]],
    *,
    k: int = 3,
    variant: int = 1,
    where: Bool[ArrayLike, " n"] | None = None,
    standardize: bool = False,
    key: PRNGKeyArray | None = None,
    block_size: int = 512,
    base: float | None = None,
) -> Scalar:
    r"""KSG estimate of the total correlation sum_l H(X_l) - H(X_1, ..., X_m) (nats).

    See the module docstring for the estimators. m = 2 is the mutual information.

    Args:
      variables: m >= 2 arrays of samples [N] or [N, d_l] (row i of each is one joint sample).
      k: neighbours, 1 <= k < N (scikit-learn and NPEET default 3).
      variant: 1 (strict counts in the joint radius) or 2 (non-strict, per-subspace radii).
      where: boolean [N], False at padding: those samples are neither queries nor neighbours;
        N counts the valid ones. Fewer than k + 1 valid samples give 0.
      standardize: divide each column by its (population) standard deviation first.
      key: a PRNG key: adds scikit-learn's tie-breaking jitter 1e-10 max(1, mean|column|) N(0, 1)
        (after ``standardize``). Without it, tied coordinates are counted as they are.
      block_size: query points per block (static); memory O(N block_size) per variable.
      base: logarithm base.

    Returns:
      A scalar (float32, or float64 for float64 inputs), not clipped at 0 (scikit-learn
      returns max(0, I)). Counts are piecewise constant: the gradient is zero.
    """
    if isinstance(variables, jax.Array) or not isinstance(variables, Sequence):
        raise TypeError("`variables` must be a sequence of sample arrays [N] or [N, d].")
    if len(variables) < 2:
        raise ValueError(f"`variables` needs at least 2 arrays, got {len(variables)}.")
    value = _ksg(tuple(variables), where, key, k, variant, block_size, bool(standardize))
    return _checks.in_base(value, base)


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6))
def _ksg(variables, where, key, k, variant, block_size, standardize):
    """The estimator, validation included, as one computation (an eager call compiles once)."""
    vs = [_points(v, f"variables[{i}]") for i, v in enumerate(variables)]
    n = vs[0].shape[0]
    for i, v in enumerate(vs):
        if v.shape[0] != n:
            raise ValueError(f"`variables[{i}]` has {v.shape[0]} samples, `variables[0]` has {n}.")
    acc = jnp.result_type(*vs)
    k = _check_k(k, n)
    variant = _checks.choice(variant, "variant", (1, 2))
    block = min(_checks.positive_int(block_size, "block_size"), n)
    valid = _checks.sample_flags(where, n)
    keys = [None] * len(vs) if key is None else list(jax.random.split(key, len(vs)))
    vs = [
        jax.lax.stop_gradient(
            _preprocess(jnp.where(valid[:, None], v, 0.0).astype(acc), valid, standardize, kk)
        )
        for v, kk in zip(vs, keys, strict=True)
    ]
    counts = _ksg_counts(vs, valid, k, variant, block).astype(acc)
    m = len(vs)
    n_valid = jnp.sum(valid).astype(acc)
    if variant == 1:
        per_point = jnp.sum(digamma(counts + 1.0), axis=-1)
        const = digamma(float(k)) + (m - 1) * digamma(n_valid)
    else:
        per_point = jnp.sum(digamma(jnp.maximum(counts, 1.0)), axis=-1)
        const = digamma(float(k)) - (m - 1) / k + (m - 1) * digamma(n_valid)
    avg = jnp.sum(jnp.where(valid, per_point, 0.0)) / jnp.maximum(n_valid, 1.0)
    return jnp.where(n_valid > k, const - avg, 0.0)


def ksg_mutual_information(
    x: Float[ArrayLike, " n *dx"],
    y: Float[ArrayLike, " n *dy"],
    *,
    k: int = 3,
    variant: int = 1,
    where: Bool[ArrayLike, " n"] | None = None,
    standardize: bool = False,
    key: PRNGKeyArray | None = None,
    block_size: int = 512,
    base: float | None = None,
) -> Scalar:
    r"""KSG estimate of I(X; Y) in nats from N joint samples (Kraskov et al. 2004).

    ``ksg_mutual_information(x, y, standardize=True)`` on continuous data is scikit-learn's
    ``mutual_info_regression(x[:, None], y)`` for one feature, before its max(0, .) and up to
    its 1e-10 jitter (which only decides exact ties); with float64 inputs preprocessed by its
    recipe (columns / population std, then x's and y's jitter drawn in that order from
    ``RandomState(seed)``) the two agree to round-off. x may be multivariate here.

    Args:
      x: samples of X, [N] or [N, dx].
      y: samples of Y, [N] or [N, dy].
      k, variant, where, standardize, key, block_size, base: as in `ksg_total_correlation`.

    Returns:
      A scalar estimate (may be negative), zero gradient.
    """
    return ksg_total_correlation(
        [x, y],
        k=k,
        variant=variant,
        where=where,
        standardize=standardize,
        key=key,
        block_size=block_size,
        base=base,
    )


def kl_entropy(
    x: Float[ArrayLike, " n *d"],
    *,
    k: int = 3,
    norm: str = "max",
    where: Bool[ArrayLike, " n"] | None = None,
    block_size: int = 512,
    base: float | None = None,
) -> Scalar:
    r"""Kozachenko-Leonenko differential entropy estimate from N samples [N, d] (nats).

        H = psi(N) - psi(k) + log V_d + (d / N) sum_i log r_i

    r_i = distance from x_i to its k-th nearest neighbour, V_d = volume of the unit-RADIUS ball of
    the norm: 2^d for the max-norm, pi^{d/2} / Gamma(d/2 + 1) Euclidean (KSG eq. 20 writes the
    same with eps = 2 r and the unit-diameter ball). The bias grows with d.

    Differentiable in x (through the r_i; the neighbour choice is piecewise constant), so with
    k = 1 and the Euclidean norm it is the KoLeo spreading regularizer up to constants. A
    duplicated point has r = 0: the value is -inf (its gradient is zero there, the rest finite).

    Args:
      x: samples [N] or [N, d].
      k: neighbours, 1 <= k < N.
      norm: "max" (Chebyshev, as KSG and NPEET) or "euclidean".
      where: boolean [N], False at padding; N counts the valid samples. Fewer than k + 1 valid
        samples give 0.
      block_size: query points per block (static).
      base: logarithm base.

    Returns:
      A scalar, float32 (float64 for float64 inputs).
    """
    return _checks.in_base(_kl_entropy(x, where, k, norm, block_size), base)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _kl_entropy(x, where, k, norm, block_size):
    x = _points(x, "x")
    n, d = x.shape
    k = _check_k(k, n)
    norm = _checks.choice(norm, "norm", _NORMS)
    block = min(_checks.positive_int(block_size, "block_size"), n)
    valid = _checks.sample_flags(where, n)
    x = jnp.where(valid[:, None], x, 0.0)
    xs = jax.lax.stop_gradient(x)
    cols = jnp.arange(n)

    def rows(idx):
        excluded = (idx[:, None] == cols[None, :]) | ~valid[None, :]
        dist = jnp.where(excluded, jnp.inf, _distances(xs[idx], xs, norm))
        return _top_k(-dist, k)[1][:, -1]

    nearest = _blockwise(rows, n, block)
    diff = x - x[nearest]
    if norm == "max":
        r = jnp.max(jnp.abs(diff), axis=-1)
        pos = r > 0
        log_r = jnp.log(jnp.where(pos, r, 1.0))
    else:
        sq = jnp.sum(diff * diff, axis=-1)
        pos = sq > 0
        log_r = 0.5 * jnp.log(jnp.where(pos, sq, 1.0))
    n_valid = jnp.sum(valid).astype(x.dtype)
    if norm == "max":
        log_unit_ball = d * math.log(2.0)
    else:
        log_unit_ball = 0.5 * d * math.log(math.pi) - math.lgamma(d / 2 + 1.0)
    mean_log_r = jnp.sum(jnp.where(valid, log_r, 0.0)) / jnp.maximum(n_valid, 1.0)
    value = digamma(n_valid) - digamma(float(k)) + log_unit_ball + d * mean_log_r
    # log 0 = -inf at a duplicate; the finite remainder keeps its gradient.
    value = -_masked.plus_inf_where(-value, jnp.any(valid & ~pos))
    return jnp.where(n_valid > k, value, 0.0)
