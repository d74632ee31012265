"""Spectral (matrix) entropies: von Neumann, matrix Renyi, Vendi, effective rank, diffusion
spectral entropy, and a matrix-free estimate for large matrices.

All of them are Renyi entropies of a normalized spectrum p = lambda / sum(lambda) of a PSD
matrix:

    S_q(p) = log(sum_i p_i^q) / (1 - q),   S_1 = -sum p log p,   S_0 = log rank,
    S_inf = -log max p,                     S_2 = -log ||rho||_F^2  (no eigendecomposition)

Gradients go through a custom VJP, grad_A F(lambda(A)) = V diag(dF/dlambda) V^T, which is exact
at repeated eigenvalues (identity kernels, duplicated samples), and normalized eigenvalues at or
below ``eps`` count as exact zeros in value and gradient, where f'(lambda) diverges (N < d,
duplicated rows, zero eigenvalues). ``eps=None`` is 4 sqrt(n) * machine epsilon of the dtype,
the round-off level of `eigh` on a trace-one n x n matrix. Inputs are accumulated in at least
float32 (bf16 features are upcast before any product).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from entreg import _checks, _masked, _spectrum
from entreg._typing import Array, ArrayLike, Bool, Float, Integer, PRNGKeyArray, Scalar


def _matrix(x, name: str) -> jax.Array:
    x = _checks.float_array(x, name)
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"`{name}` must be square [..., n, n], got shape {x.shape}.")
    return x


def _features(x, name: str = "features") -> jax.Array:
    x = _checks.float_array(x, name)
    if x.ndim < 2:
        raise ValueError(f"`{name}` must be [..., N, d], got shape {x.shape}.")
    return x


def _row_weights(weights, where, rows: tuple[int, ...], dtype) -> jax.Array | None:
    """Per-row weights of shape ``rows`` from ``weights`` (>= 0) and a boolean row mask; rows
    with weight 0 are left out (see `_drop_rows`)."""
    w = None
    if weights is not None:
        w = _checks.float_array(weights, "weights")
        w = _checks.broadcast(w, rows, "weights", "rows")
        w = _checks.nonnegative(w, "weights", "sample weights")
    if where is not None:
        keep = _checks.broadcast_bool(where, rows, "where", "rows")
        w = jnp.where(keep, 1.0 if w is None else w, 0.0).astype(dtype)
    return w


def _drop_rows(x: jax.Array, w: jax.Array | None) -> jax.Array:
    """Zeroes the rows of zero weight BEFORE any arithmetic: left-out rows may hold NaN
    (padding), which must reach neither the value nor the gradient."""
    return x if w is None else jnp.where((w > 0)[..., None], x, 0.0)


def _second_moment(x: jax.Array, w: jax.Array | None) -> jax.Array:
    """The smaller of X^T W X [d, d] and W^1/2 X X^T W^1/2 [N, N]: same nonzero spectrum."""
    n, d = x.shape[-2:]
    xt = jnp.swapaxes(x, -1, -2)
    if d <= n:
        return xt @ (x if w is None else x * w[..., None])
    return x @ xt if w is None else (x @ xt) * _masked.weight_outer(w)


def _feature_entropy(x, w, order: float, eps) -> jax.Array:
    m = _second_moment(x, w)
    eps = _spectrum.check_eps(eps, m.shape[-1], m.dtype)
    if order == 2.0:
        return _collision_entropy(m)
    return _spectrum.entropy_of_spectrum(_spectrum.eigvalsh(m), order, eps)


def _collision_entropy(k: jax.Array) -> jax.Array:
    """S_2 = -log(||K||_F^2 / (tr K)^2) of a symmetric PSD K, scaled first (scale invariant) so
    that tiny matrices keep a finite gradient; 0 for the zero matrix."""
    flat = k.reshape((*k.shape[:-2], -1))
    k = k / _spectrum.unit_scale(flat)[..., None]
    trace = jnp.trace(k, axis1=-2, axis2=-1)
    frob = jnp.sum(k * k, axis=(-2, -1))
    ok = trace > 0
    return -jnp.log(jnp.where(ok, frob, 1.0) / jnp.where(ok, trace, 1.0) ** 2)


def spectral_entropy(
    eigenvalues: Float[ArrayLike, "*batch n"],
    *,
    order: float = 1.0,
    axis: int = -1,
    eps: float | None = None,
    base: float | None = None,
) -> Float[Array, "*batch"]:
    r"""Renyi entropy of order q of a spectrum normalized to sum one.

        p = lambda / sum(lambda),   S_q = log(sum_{p_i > eps} p_i^q) / (1 - q)

    with the limits S_1 = -sum p log p (von Neumann / Shannon), S_0 = log #{p_i > eps} (log rank)
    and S_inf = -log max p. exp(S_q) is the Hill number (effective rank) of order q.

    Args:
      eigenvalues: eigenvalues of a PSD matrix [..., n]; small negative round-off counts as 0.
      order: q >= 0 or ``math.inf`` (static).
      axis: the spectrum axis.
      eps: normalized eigenvalues <= eps are exact zeros (value and gradient); ``None`` picks the
        round-off level 4 sqrt(n) * machine epsilon.
      base: logarithm base (``None``: nats; 2: bits).

    Returns:
      The entropy with ``axis`` reduced; 0 for an all-zero spectrum.
    """
    lam = _checks.float_array(eigenvalues, "eigenvalues")
    axis = _checks.normalize_axis(axis, lam.ndim, "eigenvalues")
    lam = jnp.moveaxis(lam, axis, -1)
    q = _spectrum.check_order(order)
    eps = _spectrum.check_eps(eps, lam.shape[-1], lam.dtype)
    return _checks.in_base(_spectrum.entropy_of_spectrum(lam, q, eps), base)


def matrix_entropy(
    matrix: Float[ArrayLike, "*batch n n"],
    *,
    order: float = 1.0,
    eps: float | None = None,
    base: float | None = None,
) -> Float[Array, "*batch"]:
    r"""Matrix Renyi entropy of order q (Sanchez Giraldo, Rao & Principe 2015) of a PSD matrix.

        A = K / tr K,   S_q(A) = log(tr A^q) / (1 - q),   S_1(A) = -tr(A log A)

    At q = 1 and for a density matrix (tr rho = 1) this is the von Neumann entropy
    -tr(rho log rho). q = 2 uses ||K||_F^2 / (tr K)^2 and needs no eigendecomposition (the
    shortcut sum(K^2) / N^2 is right only for a unit diagonal).

    Args:
      matrix: symmetric PSD [..., n, n] (its symmetric part is used).
      order, eps, base: as in `spectral_entropy`.
    """
    k = _matrix(matrix, "matrix")
    q = _spectrum.check_order(order)
    eps = _spectrum.check_eps(eps, k.shape[-1], k.dtype)
    if q == 2.0:
        return _checks.in_base(_collision_entropy(_spectrum.symmetrize(k)), base)
    return _checks.in_base(_spectrum.entropy_of_spectrum(_spectrum.eigvalsh(k), q, eps), base)


def joint_matrix_entropy(
    a: Float[ArrayLike, "*batch n n"],
    b: Float[ArrayLike, "*batch n n"],
    *,
    order: float = 1.0,
    eps: float | None = None,
    base: float | None = None,
) -> Float[Array, "*batch"]:
    r"""Joint matrix Renyi entropy S_q(A, B) = S_q(A o B / tr(A o B)) (Hadamard product; Sanchez
    Giraldo et al. 2015) of two PSD Gram matrices over the same n samples [..., n, n]."""
    a, b = _matrix(a, "a"), _matrix(b, "b")
    _checks.same_shape(a, b, "a", "b")
    return matrix_entropy(a * b, order=order, eps=eps, base=base)


def matrix_mutual_information(
    a: Float[ArrayLike, "*batch n n"],
    b: Float[ArrayLike, "*batch n n"],
    *,
    order: float = 1.0,
    eps: float | None = None,
    base: float | None = None,
) -> Float[Array, "*batch"]:
    r"""Matrix-based mutual information I_q(A; B) = S_q(A) + S_q(B) - S_q(A, B) (Sanchez Giraldo
    et al. 2015) between two Gram matrices over the same samples. >= 0 for q = 1 with unit
    diagonals; information-bottleneck studies use q = 1.01 and ``base=2``."""
    _matrix(a, "a"), _matrix(b, "b")
    kw: dict[str, Any] = {"order": order, "eps": eps, "base": base}
    return matrix_entropy(a, **kw) + matrix_entropy(b, **kw) - joint_matrix_entropy(a, b, **kw)


def effective_rank(
    matrix: Float[ArrayLike, "*batch m n"], *, order: float = 1.0, eps: float | None = None
) -> Float[Array, "*batch"]:
    r"""Effective rank of a matrix [..., m, n] from its SINGULAR values (Roy & Vetterli 2007):

        p_i = sigma_i / sum_j sigma_j,   erank = exp(S_q(p))   (q = 1 in the paper)

    Between 1 and min(m, n). Note the normalization: exp(`von_neumann_entropy`) and the Vendi
    score use sigma^2 (eigenvalues of the Gram matrix) instead, which weighs small directions
    less. ``eps`` applies to the normalized squared singular values (round-off of the Gram
    eigenvalues) before the square root.
    """
    x = _features(matrix, "matrix")
    q = _spectrum.check_order(order)
    m = _second_moment(x, None)
    eps = _spectrum.check_eps(eps, m.shape[-1], m.dtype)
    lam = jnp.maximum(_spectrum.eigvalsh(m), 0.0)
    keep = lam > eps * jnp.sum(lam, axis=-1, keepdims=True)
    sigma = jnp.where(keep, jnp.sqrt(jnp.where(keep, lam, 1.0)), 0.0)
    return jnp.exp(_spectrum.entropy_of_spectrum(sigma, q, 0.0))


def von_neumann_entropy(
    features: Float[ArrayLike, "*batch n d"],
    *,
    order: float = 1.0,
    normalize: bool = True,
    where: Bool[ArrayLike, "*#batch n"] | None = None,
    eps: float | None = None,
) -> Float[Array, "*batch"]:
    r"""Von Neumann entropy of a representation (VNE; Kim et al., CVPR 2023).

        Z = rows of ``features`` scaled to unit norm,   rho = Z^T Z / N  (d x d, trace 1),
        VNE = -sum_i lambda_i log lambda_i

    computed from the smaller of Z^T Z (d x d) and Z Z^T (N x N), which share their nonzero
    spectrum, so it costs O(N d min(N, d)). ``order != 1`` gives the Renyi version S_q(rho); q = 2
    skips the eigendecomposition. Bounded by log min(N, d): log d for isotropic features, log k
    for features spread evenly over k orthogonal directions, 0 at complete collapse. For the von
    Neumann entropy of a given density matrix use `matrix_entropy`.

    Args:
      features: [..., N, d] (leading axes are independent sets).
      order: Renyi order (static).
      normalize: scale rows to unit norm first (as the paper); all-zero rows are left out.
      where: boolean row mask [..., N]; False rows are left out (padding).
      eps: see the module docstring.

    Examples:
      >>> import jax.numpy as jnp
      >>> import entreg
      >>> x = jnp.eye(4)  # isotropic: the maximum, log 4
      >>> print(f"{entreg.von_neumann_entropy(x):.4f}")
      1.3863
    """
    x = _features(features)
    q = _spectrum.check_order(order)
    w = _row_weights(None, where, x.shape[:-1], x.dtype)
    x = _drop_rows(x, w)
    if normalize:
        x = _masked.unit_rows(x)
    return _feature_entropy(x, w, q, eps)


def log_vendi_score(
    features: Float[ArrayLike, "*batch n d"],
    *,
    order: float = 1.0,
    kernel: Callable | None = None,
    weights: Float[ArrayLike, "*#batch n"] | None = None,
    normalize: bool = True,
    eps: float | None = None,
) -> Float[Array, "*batch"]:
    r"""log VS_q: the Renyi entropy of order q of the similarity matrix's normalized spectrum.

    See `vendi_score`; the log is the scale to optimize (its gradient is the one Vendi sampling
    pushes replicas with).
    """
    x = _features(features)
    q = _spectrum.check_order(order)
    w = _row_weights(weights, None, x.shape[:-1], x.dtype)
    x = _drop_rows(x, w)
    if kernel is None:
        if normalize:
            x = _masked.unit_rows(x)
        return _feature_entropy(x, w, q, eps)
    if not callable(kernel):
        raise TypeError(f"`kernel` must be a function k(x, y) -> scalar, got {kernel!r}.")
    batch = x.shape[:-2]
    flat = x.reshape((-1, *x.shape[-2:]))
    gram = jax.vmap(lambda z: jax.vmap(lambda a: jax.vmap(lambda b: kernel(a, b))(z))(z))(flat)
    gram = gram.reshape((*batch, *gram.shape[-2:]))
    return log_vendi_score_from_kernel(gram, order=order, weights=weights, eps=eps)


def vendi_score(
    features: Float[ArrayLike, "*batch n d"],
    *,
    order: float = 1.0,
    kernel: Callable | None = None,
    weights: Float[ArrayLike, "*#batch n"] | None = None,
    normalize: bool = True,
    eps: float | None = None,
) -> Float[Array, "*batch"]:
    r"""Vendi score of order q of a set of samples (Friedman & Dieng 2023; Pasarkar & Dieng 2024).

        K_ij = k(x_i, x_j) with k(x, x) = 1,   lambda = eig(K / n),
        VS_q = exp(S_q(lambda)) = (sum_i lambda_i^q)^(1 / (1 - q)),
        VS_1 = exp(-sum lambda log lambda),  VS_inf = 1 / max lambda,  VS_0 = rank

    "The effective number of distinct samples": 1 <= VS <= n, n for orthogonal samples, 1 when
    all are identical. Small q counts rare modes, large q the common ones. With the default
    cosine kernel (``kernel=None``: linear on unit-norm rows) the spectrum comes from the
    smaller of X^T X (d x d, the "dual") and X X^T (n x n), chosen by shape, and VS_1 =
    exp(`von_neumann_entropy`). With sample ``weights`` p (any non-negative scale),
    K o sqrt(p) sqrt(p)^T replaces K / n. A kernel without unit diagonal is normalized by its
    trace, K / tr K, which equals K / n for unit diagonals.

    Args:
      features: [..., n, d]; leading axes are independent sets.
      order: q >= 0 or ``math.inf`` (static).
      kernel: ``k(x, y) -> scalar`` on two feature rows; None: cosine similarity.
      weights: non-negative sample weights [..., n] (zero leaves a sample out).
      normalize: for the cosine kernel, scale rows to unit norm (False: linear kernel).
      eps: see the module docstring.

    Examples:
      >>> import jax.numpy as jnp
      >>> import entreg
      >>> x = jnp.concatenate([jnp.eye(3), jnp.eye(3)])  # 3 distinct samples, twice each
      >>> print(f"{entreg.vendi_score(x):.4f}")
      3.0000
    """
    return jnp.exp(
        log_vendi_score(
            features, order=order, kernel=kernel, weights=weights, normalize=normalize, eps=eps
        )
    )


def log_vendi_score_from_kernel(
    kernel_matrix: Float[ArrayLike, "*batch n n"],
    *,
    order: float = 1.0,
    weights: Float[ArrayLike, "*#batch n"] | None = None,
    eps: float | None = None,
) -> Float[Array, "*batch"]:
    """log VS_q from a similarity matrix [..., n, n]; see `vendi_score_from_kernel`."""
    k = _matrix(kernel_matrix, "kernel_matrix")
    if weights is not None:
        w = _row_weights(weights, None, k.shape[:-1], k.dtype)
        assert w is not None  # weights were given
        kept = w > 0  # entries of left-out samples may hold anything (NaN): dropped first
        k = jnp.where(kept[..., :, None] & kept[..., None, :], k, 0.0) * _masked.weight_outer(w)
    return matrix_entropy(k, order=order, eps=eps)


def vendi_score_from_kernel(
    kernel_matrix: Float[ArrayLike, "*batch n n"],
    *,
    order: float = 1.0,
    weights: Float[ArrayLike, "*#batch n"] | None = None,
    eps: float | None = None,
) -> Float[Array, "*batch"]:
    r"""Vendi score of order q from a PSD similarity matrix K [..., n, n] with unit diagonal:
    exp(S_q) of the eigenvalues of K / n, or of K o sqrt(p) sqrt(p)^T with sample ``weights``
    p (normalized to sum one). Equivalent to `vendi_score` with the kernel that built K; order
    q = 2 is n^2 / ||K||_F^2 without an eigendecomposition."""
    return jnp.exp(
        log_vendi_score_from_kernel(kernel_matrix, order=order, weights=weights, eps=eps)
    )


def _dse(x, keep, sigma: float, t: float, drop_trivial: bool, eps) -> jax.Array:
    """DSE in nats of the rows of ``x`` [N, d] where ``keep`` [N] (the others are left out)."""
    sq = jnp.sum(x * x, axis=-1)
    # Squared distances, not norms: the norm's gradient is NaN at zero distance.
    dist = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)
    gram = jnp.exp(-dist / (2.0 * sigma**2)) * (keep[:, None] & keep[None, :])
    deg = jnp.sum(gram, axis=-1)
    inv = jnp.where(deg > 0, jax.lax.rsqrt(jnp.where(deg > 0, deg, 1.0)), 0.0)
    lam = _spectrum.eigvalsh(gram * inv[:, None] * inv[None, :])
    # Round-off zeros are cut relative to the WHOLE spectrum, before the power (which would lift
    # them above eps) and before the trivial eigenvalue is dropped (after which the round-off of
    # constant data would be renormalized into an entropy).
    keep = lam > eps * jnp.sum(jnp.maximum(lam, 0.0))
    lam = jnp.where(keep, jnp.where(keep, lam, 1.0) ** t, 0.0)
    if drop_trivial:
        lam = lam[..., :-1]  # ascending: the trivial eigenvalue 1 comes last
    return _spectrum.entropy_of_spectrum(lam, 1.0, eps)


def _dse_args(features, sigma, t, eps):
    x = _features(features)
    if x.ndim != 2:
        raise ValueError(f"`features` must be [N, d], got shape {x.shape}; vmap over sets.")
    sigma = _checks.real_scalar(sigma, "sigma", minimum=0.0)
    if sigma <= 0:
        raise ValueError(f"`sigma` must be > 0, got {sigma}.")
    t = _checks.real_scalar(t, "t", minimum=0.0)
    if t <= 0:
        raise ValueError(f"`t` must be > 0, got {t}.")
    return x, sigma, t, _spectrum.check_eps(eps, x.shape[0], x.dtype)


def diffusion_spectral_entropy(
    features: Float[ArrayLike, "n d"],
    *,
    sigma: float = 10.0,
    t: float = 1,
    drop_trivial: bool = False,
    base: float | None = 2.0,
    where: Bool[ArrayLike, " n"] | None = None,
    eps: float | None = None,
) -> Scalar:
    r"""Diffusion spectral entropy (DSE; Liao, Liu et al. 2023) of a point cloud [N, d].

        G_ij = exp(-||z_i - z_j||^2 / (2 sigma^2)),   D = diag(G 1),   K = D^-1/2 G D^-1/2,
        alpha = |lambda(K)|^t / sum |lambda(K)|^t,    DSE = -sum alpha log_2 alpha

    K has the spectrum of the diffusion operator P = D^-1 G (the reference's 1 / (sigma sqrt(2
    pi)) factor on G cancels here). The paper drops the trivial eigenvalue 1
    (``drop_trivial=True``); the authors' loss version keeps it (the default). Negative
    round-off eigenvalues are clipped to zero.

    Args:
      features: [N, d] (vmap for a batch of clouds).
      sigma: Gaussian kernel bandwidth (reference default 10; set it to the scale of the data).
      t: diffusion time, > 0.
      drop_trivial: leave out the largest eigenvalue.
      base: logarithm base (2: bits, as the paper; None: nats).
      where: boolean row mask [N]; False rows are left out.
      eps: see the module docstring.
    """
    x, sigma, t, eps = _dse_args(features, sigma, t, eps)
    keep = (
        jnp.ones(x.shape[0], bool)
        if where is None
        else _checks.broadcast_bool(where, x.shape[:1], "where", "features rows")
    )
    return _checks.in_base(_dse(_drop_rows(x, keep), keep, sigma, t, drop_trivial, eps), base)


def diffusion_spectral_mutual_information(
    key: PRNGKeyArray,
    features: Float[ArrayLike, "n d"],
    labels: Integer[ArrayLike, " n"],
    *,
    num_classes: int,
    repetitions: int = 5,
    sigma: float = 10.0,
    t: float = 1,
    drop_trivial: bool = False,
    base: float | None = 2.0,
    where: Bool[ArrayLike, " n"] | None = None,
    eps: float | None = None,
) -> Scalar:
    r"""Diffusion spectral mutual information between a point cloud and its labels (DSMI).

        DSMI(Z; Y) = sum_c p(c) [ mean_r DSE(Z_{R_c,r}) - DSE(Z | Y = c) ]

    where R_{c,r} is a uniformly random subset of the (valid) rows of the same size n_c as
    class c, drawn ``repetitions`` times from ``key``: size-matched subsets remove the
    sample-size bias of comparing a class with the whole cloud. Subsets are row masks, so
    shapes are static and the whole estimate jits; it costs C (repetitions + 1)
    eigendecompositions of N x N, run one after another.

    Args:
      key: PRNG key for the random subsets.
      features: [N, d].
      labels: integer class labels [N] in [0, num_classes).
      num_classes: C (static).
      repetitions: random subsets per class (reference: 5).
      where: boolean row mask [N]; False rows are left out.
      sigma, t, drop_trivial, base, eps: as in `diffusion_spectral_entropy`.
    """
    x, sigma, t, eps = _dse_args(features, sigma, t, eps)
    n = x.shape[0]
    labels = jnp.asarray(labels)
    if labels.shape != (n,) or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(
            f"`labels` must be integers of shape ({n},), got {labels.dtype}{labels.shape}."
        )
    num_classes = _checks.positive_int(num_classes, "num_classes")
    repetitions = _checks.positive_int(repetitions, "repetitions")
    valid = (
        jnp.ones(n, bool)
        if where is None
        else _checks.broadcast_bool(where, (n,), "where", "features rows")
    )
    _checks.index_range(labels, "labels", num_classes)
    x = _drop_rows(x, valid)
    member = (labels[None, :] == jnp.arange(num_classes)[:, None]) & valid  # [C, N]
    counts = jnp.sum(member, axis=-1)
    # Random size-matched subsets: the n_c valid rows with the smallest uniform scores. Class c
    # draws from fold_in(key, c), so its subsets do not depend on num_classes.
    scores = jax.vmap(lambda c: jax.random.uniform(jax.random.fold_in(key, c), (repetitions, n)))(
        jnp.arange(num_classes)
    )
    scores = jnp.where(valid, scores, 2.0)
    ranks = jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1)
    subsets = jnp.swapaxes(ranks < counts[:, None, None], 0, 1)  # [R, C, N]
    masks = jnp.concatenate([member[None], subsets]).reshape(-1, n)
    dse = jax.lax.map(lambda m: _dse(x, m, sigma, t, drop_trivial, eps), masks)
    dse = dse.reshape(repetitions + 1, num_classes)
    p = counts / jnp.maximum(jnp.sum(valid), 1)
    return _checks.in_base(jnp.sum(p * (jnp.mean(dse[1:], axis=0) - dse[0])), base)


def stochastic_spectral_entropy(
    key: PRNGKeyArray,
    matvec: Callable[[Float[Array, " n"]], Float[Array, " n"]],
    size: int,
    *,
    order: float = 1.0,
    num_probes: int = 32,
    num_steps: int = 32,
    base: float | None = None,
) -> tuple[Scalar, Scalar]:
    r"""Matrix-free estimate of S_q(A / tr A) for a PSD operator A given only v -> A v.

    Stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017): for each of ``num_probes``
    Rademacher vectors v, ``num_steps`` Lanczos steps (full reorthogonalization) give Ritz values
    theta_k and weights tau_k^2 with v^T f(A) v ~= n sum_k tau_k^2 f(theta_k). The same probes
    estimate tr A and tr f(A) for f(x) = x log x (q = 1) or x^q, and

        S_1 = log tr A - tr(A log A) / tr A,   S_q = (log tr A^q - q log tr A) / (1 - q).

    Memory is O(n num_steps) per probe, never n x n: use it for the Vendi score or VNE of a set
    too large for an n x n matrix, with ``matvec`` evaluating kernel rows in blocks.

    Returns:
      (estimate, standard error). The error is the probe noise (delta method over probes), which
      shrinks as 1 / sqrt(num_probes); the quadrature error is exponentially small in
      ``num_steps`` for spectra away from zero and is not included. Orders 0 and inf have no
      smooth trace form and are refused. Ritz values at round-off level count as zero, and the
      zero operator gives 0. The estimate is a measurement, not a training signal: it carries
      no gradient (Lanczos has none where it breaks down, e.g. at the identity or a low-rank
      operator); train through `matrix_entropy` or `von_neumann_entropy` instead.
    """
    q = _spectrum.check_order(order)
    if q in (0.0, math.inf):
        raise ValueError("`order` must be finite and > 0 for the stochastic estimate.")
    size = _checks.positive_int(size, "size")
    num_probes = _checks.positive_int(num_probes, "num_probes")
    num_steps = _checks.positive_int(num_steps, "num_steps")
    if num_probes < 2:
        raise ValueError("`num_probes` must be >= 2 for a standard error.")
    if not callable(matvec):
        raise TypeError(f"`matvec` must be a function v [n] -> A v [n], got {matvec!r}.")
    steps = min(num_steps, size)
    probes = jax.random.rademacher(
        key, (num_probes, size), dtype=jax.dtypes.canonicalize_dtype(jnp.float64)
    )
    theta, tau2 = jax.vmap(lambda v: _lanczos(matvec, v, steps))(probes)
    # Ritz values at round-off level of the largest are zeros (as eigenvalues below eps are in
    # the other spectral functions): x^q with q < 1 would otherwise lift them.
    cut = _spectrum.default_eps(size, theta.dtype) * jnp.max(theta, axis=-1, keepdims=True)
    theta = jnp.where(theta > cut, theta, 0.0)
    pos = theta > 0
    safe = jnp.where(pos, theta, 1.0)
    traces = size * jnp.sum(tau2 * theta, axis=-1)  # [P]
    if q == 1.0:
        f = jnp.where(pos, safe * jnp.log(safe), 0.0)
    else:
        f = jnp.where(pos, safe**q, 0.0)
    fsum = size * jnp.sum(tau2 * f, axis=-1)  # [P]
    tr, g = jnp.mean(traces), jnp.mean(fsum)
    nonzero = (tr > 0) & (g > 0 if q != 1.0 else True)  # the zero operator has entropy 0
    tr_safe, g_safe = jnp.where(nonzero, tr, 1.0), jnp.where(nonzero, g, 1.0)
    if q == 1.0:
        value = jnp.log(tr_safe) - g / tr_safe
        influence = -fsum / tr_safe + (1.0 / tr_safe + g / tr_safe**2) * traces
    else:
        value = (jnp.log(g_safe) - q * jnp.log(tr_safe)) / (1.0 - q)
        influence = (fsum / g_safe - q * traces / tr_safe) / (1.0 - q)
    stderr = jnp.std(influence, ddof=1) / math.sqrt(num_probes)
    value, stderr = (jnp.where(nonzero, x, 0.0) for x in (value, stderr))
    # No gradient: Lanczos' derivative is undefined where it breaks down (identity, low rank).
    return jax.lax.stop_gradient((_checks.in_base(value, base), _checks.in_base(stderr, base)))


def _lanczos(matvec, v, steps: int):
    """Ritz values and squared first components of ``steps`` Lanczos steps from v."""
    n = v.shape[0]
    q0 = v / jnp.linalg.norm(v)
    basis = jnp.zeros((steps, n), v.dtype).at[0].set(q0)
    alpha = jnp.zeros(steps, v.dtype)
    beta = jnp.zeros(steps, v.dtype)  # beta[k] couples vectors k and k + 1

    def body(k, carry):
        basis, alpha, beta = carry
        w = matvec(basis[k]).astype(v.dtype)
        a = jnp.dot(w, basis[k])
        # Full reorthogonalization, twice ("twice is enough"), against the vectors built so far.
        built = (jnp.arange(steps) <= k)[:, None] * basis
        w = w - built.T @ (built @ w)
        w = w - built.T @ (built @ w)
        b = jnp.linalg.norm(w)
        # Breakdown (an invariant subspace was found): stop extending, the quadrature is exact.
        alive = b > 1e-6 * (jnp.abs(a) + jnp.abs(beta[jnp.maximum(k - 1, 0)]) + 1e-30)
        nxt = jnp.where(alive, w / jnp.where(alive, b, 1.0), 0.0)
        basis = jax.lax.dynamic_update_index_in_dim(
            basis, jnp.where(k + 1 < steps, nxt, basis[(k + 1) % steps]), (k + 1) % steps, 0
        )
        return basis, alpha.at[k].set(a), beta.at[k].set(jnp.where(alive, b, 0.0))

    _, alpha, beta = jax.lax.fori_loop(0, steps, body, (basis, alpha, beta))
    off = beta[:-1]
    tri = jnp.diag(alpha) + jnp.diag(off, 1) + jnp.diag(off, -1)
    theta, vecs = jnp.linalg.eigh(tri)
    return theta, vecs[0] ** 2
