"""entreg.kernels.infonce_from_embeddings (blockwise, custom VJP) against its dense reference
and a float64 oracle; entreg.losses.contrastive terms (InfoNCE / NT-Xent, Deep InfoMax JSD,
effective entropy) in compose; negatives gathered over 8 devices equal one device."""

import functools
import math

import jax
import jax.numpy as jnp
import mi_oracles as oracle
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from scipy import special

import entreg
from entreg import kernels, losses

RNG = np.random.default_rng(0)
X = RNG.normal(size=(10, 4))
Y = RNG.normal(size=(13, 4))
WX, WY = np.arange(10) != 2, np.arange(13) != 5
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
LN2 = math.log(2)


def oracle_infonce(x, y, tau, direction="rows", labels=None, exclude=False, wx=None, wy=None):
    s = np.asarray(x, np.float64) @ np.asarray(y, np.float64).T / tau
    n, m = s.shape
    labels = np.arange(n) if labels is None else np.asarray(labels)
    pos = np.zeros((n, m), bool)
    pos[np.arange(n)[labels >= 0], labels[labels >= 0]] = True
    valid = np.ones((n, m), bool)
    if wx is not None:
        valid &= np.asarray(wx)[:, None] & np.asarray(wy)[None, :]
    if exclude:
        valid &= ~np.eye(n, m, dtype=bool)
    return oracle.infonce(s, pos & valid, valid, direction)


def test_blockwise_equals_dense_reference_and_oracle():
    labels = np.r_[RNG.permutation(13)[:9], -1]  # one row without a positive
    cases = [  # both directions with padding; a custom positive per row without padding
        dict(direction="both", where_x=WX, where_y=WY),
        dict(direction="columns", labels=labels, exclude_diagonal=True),
    ]

    @jit
    def run(a, b, t):
        out = []
        for kw in cases:
            for impl in ("xla", "reference"):
                f = functools.partial(
                    kernels.infonce_from_embeddings, block_size=3, implementation=impl, **kw
                )
                out.append(
                    jax.value_and_grad(lambda a, b, t, f=f: f(a, b, temperature=t), (0, 1, 2))(
                        a, b, t
                    )
                )
        return out

    results = run(X, Y, 0.7)
    for i, kw in enumerate(cases):
        (v1, g1), (v2, g2) = results[2 * i], results[2 * i + 1]
        ref = oracle_infonce(
            X,
            Y,
            0.7,
            kw["direction"],
            kw.get("labels"),
            kw.get("exclude_diagonal", False),
            kw.get("where_x"),
            kw.get("where_y"),
        )
        np.testing.assert_allclose(v1, ref, rtol=1e-12, err_msg=str(kw))
        np.testing.assert_allclose(v2, ref, rtol=1e-12, err_msg=str(kw))
        for a, b in zip(g1, g2, strict=True):  # x, y and the temperature
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13, err_msg=str(kw))
    # The dense path is the core bound on x y^T / tau.
    np.testing.assert_allclose(
        kernels.infonce_from_embeddings(X, Y, temperature=0.5, direction="both", block_size=4),
        entreg.infonce_bound(X @ Y.T / 0.5, direction="both"),
        rtol=1e-12,
    )


def test_padding_garbage_and_bf16():
    dirty_x = np.where(WX[:, None], X, np.nan)
    dirty_y = np.where(WY[:, None], Y, np.inf)

    def f(a, b, t):
        return kernels.infonce_from_embeddings(
            a, b, temperature=t, direction="both", where_x=WX, where_y=WY, block_size=4
        )

    run = jit(jax.vmap(jax.value_and_grad(f, (0, 1, 2)), in_axes=(0, 0, None)))
    v, g = run(np.stack([dirty_x, X]), np.stack([dirty_y, Y]), 1.0)
    np.testing.assert_array_equal(v[0], v[1])
    for a in g:
        np.testing.assert_array_equal(a[0], a[1])
    assert np.all(g[0][0][~WX] == 0) and np.all(g[1][0][~WY] == 0)
    # bf16 embeddings stay bf16 (their gradients too); scores accumulate in float32.
    xb, yb = (jnp.asarray(a, jnp.bfloat16) for a in (X, Y))
    v, (gx, gy, _) = jit(
        jax.value_and_grad(
            lambda a, b, t: kernels.infonce_from_embeddings(a, b, temperature=t, block_size=4),
            (0, 1, 2),
        )
    )(xb, yb, jnp.float32(0.5))
    assert v.dtype == jnp.float32 and gx.dtype == gy.dtype == jnp.bfloat16
    ref = oracle_infonce(*(np.asarray(a, np.float64) for a in (xb, yb)), 0.5)
    np.testing.assert_allclose(v, ref, rtol=1e-5)


def test_no_quadratic_temporaries():
    """fwd + bwd at N = 1024 holds far less than one [N, N] float32 score matrix."""
    x = jnp.ones((1024, 32), jnp.float32)

    def loss(a, b):
        return kernels.infonce_from_embeddings(a, b, direction="both", block_size=64)

    temp = jit(jax.grad(loss, (0, 1))).lower(x, x).compile().memory_analysis()
    assert temp.temp_size_in_bytes < 1024 * 1024 * 4 / 4


def ntxent_oracle(z1, z2, tau):
    z = np.concatenate([z1, z2])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    s = z @ z.T / tau
    n = len(z1)
    terms = [s[i, (i + n) % (2 * n)] - special.logsumexp(np.delete(s[i], i)) for i in range(2 * n)]
    return math.log(2 * n - 1) + np.mean(terms)


def test_loss_terms_values_and_compose():
    z1 = RNG.normal(size=(8, 4))
    z2 = z1 + 0.3 * RNG.normal(size=(8, 4))
    loc, glob = RNG.normal(size=(8, 5, 4)), RNG.normal(size=(8, 4))
    feats = RNG.normal(size=(2, 64, 3))
    terms = (
        losses.infonce_bonus(0.5, name="clip", negatives="cross"),
        losses.infonce_bonus(0.5, name="simclr", negatives="all", weight=2.0),
        losses.deep_infomax_bonus(name="dim"),
        losses.effective_entropy_bonus(name="e2mc", covariance_weight=0.5),
        losses.effective_entropy_bonus("vmf_kde", name="er", kappa=5.0),
    )

    def task(_):
        return jnp.zeros(()), {"z1": z1, "z2": z2, "local": loc, "global": glob, "features": feats}

    loss_fn = entreg.compose(task, *terms)
    total, (_, metrics) = jax.jit(lambda: loss_fn(None, state=loss_fn.init()))()
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    clip = oracle.infonce(unit(z1) @ unit(z2).T / 0.5, direction="both")
    np.testing.assert_allclose(metrics["clip/value"], clip, rtol=1e-12)
    np.testing.assert_allclose(metrics["clip/ceiling"], math.log(8), rtol=1e-15)
    np.testing.assert_allclose(metrics["simclr/value"], ntxent_oracle(z1, z2, 0.5), rtol=1e-12)
    np.testing.assert_allclose(metrics["simclr/ceiling"], math.log(15), rtol=1e-15)
    dim = np.mean(
        [oracle.js_objective(loc[:, l] @ glob.T) + 2 * LN2 for l in range(5)]  # noqa: E741
    )
    np.testing.assert_allclose(metrics["dim/value"], dim, rtol=1e-12)
    u = 1 / (1 + np.exp(-feats))
    e2mc = np.mean([oracle.m_spacing(u[v, :, j]) for v in range(2) for j in range(3)])
    np.testing.assert_allclose(metrics["e2mc/value"], e2mc, rtol=1e-12)
    covs = [np.cov(u[v].T) for v in range(2)]
    pen = np.mean([(c**2).sum() - (np.diag(c) ** 2).sum() for c in covs]) / 3
    np.testing.assert_allclose(metrics["e2mc/covariance"], pen, rtol=1e-12)
    np.testing.assert_allclose(
        metrics["er/value"], np.mean(entreg.vmf_kde_entropy(feats, kappa=5.0))
    )
    # Padding rows (garbage included) are not samples: the value of the valid rows alone.
    keep = np.arange(8) != 5
    padded = {"z1": np.where(keep[:, None], z1, np.nan), "z2": z2, "valid": keep}
    term = losses.infonce_bonus(0.5, negatives="all", where="valid")
    np.testing.assert_allclose(
        term(padded, (), None).value,
        ntxent_oracle(z1[keep], z2[keep], 0.5),
        rtol=1e-12,
    )
    # Bonuses: loss = -weight * value (+ the E2MC covariance penalty).
    expected = (
        -clip
        - 2 * metrics["simclr/value"]
        - metrics["dim/value"]
        - e2mc
        + 0.5 * pen
        - metrics["er/value"]
    )
    np.testing.assert_allclose(total, expected, rtol=1e-12)


def test_learned_temperature_signal_gets_a_gradient():
    z1, z2 = RNG.normal(size=(6, 4)), RNG.normal(size=(6, 4))
    term = losses.infonce_bonus("tau", negatives="cross", direction="rows", similarity="dot")

    def value(log_tau):
        return term({"z1": z1, "z2": z2, "tau": jnp.exp(log_tau)}, (), None).value

    g = jit(jax.grad(value))(jnp.log(0.3))
    eps = 1e-6
    fd = (
        oracle.infonce(z1 @ z2.T / np.exp(np.log(0.3) + eps)) - oracle.infonce(z1 @ z2.T / 0.3)
    ) / eps
    np.testing.assert_allclose(g, fd, rtol=1e-4)


def test_negatives_gathered_over_8_devices_equal_one_device():
    """Rows sharded 2 per device: the kernel (both directions, both implementations) and the
    InfoNCE / NT-Xent / Deep InfoMax terms give the single-device value and gradient."""
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    z1 = RNG.normal(size=(16, 4))
    z2 = z1 + RNG.normal(size=(16, 4))
    loc = RNG.normal(size=(16, 3, 4))
    valid = RNG.random(16) > 0.2
    # The kernel call below covers the cross negatives (both directions) and the temperature.
    terms = [
        losses.infonce_bonus(0.4, negatives="all", where="valid"),
        losses.deep_infomax_bonus(where="valid"),
    ]
    sharded_terms = [
        losses.infonce_bonus(0.4, negatives="all", where="valid", axis_name="data"),
        losses.deep_infomax_bonus(where="valid", axis_name="data"),
    ]

    def total(a, b, c, w, tau, ts, axis_name=None):
        signals = {"z1": a, "z2": b, "local": c, "global": b, "valid": w}
        out = sum((i + 1) * t(signals, (), None).value for i, t in enumerate(ts))
        kernel = kernels.infonce_from_embeddings(
            a, b, temperature=tau, direction="both", block_size=1, axis_name=axis_name
        )
        return out + 5 * kernel

    sharded = jax.shard_map(
        lambda a, b, c, w, t: total(a, b, c, w, t, sharded_terms, "data"),
        mesh=mesh,
        in_specs=(P("data"),) * 4 + (P(),),
        out_specs=P(),
    )
    args = (z1, z2, loc, valid, 0.7)
    v8, g8 = jit(jax.value_and_grad(sharded, (0, 1, 2, 4)))(*args)
    v1, g1 = jit(jax.value_and_grad(lambda *a: total(*a, terms), (0, 1, 2, 4)))(*args)
    np.testing.assert_allclose(v8, v1, rtol=1e-12)
    for a, b in zip(g8, g1, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize(
    "call,exc,arg",
    [
        (lambda: kernels.infonce_from_embeddings(X, Y[:, :3]), ValueError, "x"),
        (lambda: kernels.infonce_from_embeddings(Y, X), ValueError, "y"),
        (lambda: kernels.infonce_from_embeddings(X.astype(int), Y), TypeError, "x"),
        (
            lambda: kernels.infonce_from_embeddings(X, Y, exclude_diagonal=True),
            ValueError,
            "labels",
        ),
        (
            lambda: kernels.infonce_from_embeddings(X, Y, labels=np.zeros(3, int)),
            ValueError,
            "labels",
        ),
        (lambda: kernels.infonce_from_embeddings(X, Y, where_x=WY), ValueError, "where_x"),
        (
            lambda: kernels.infonce_from_embeddings(X, Y, temperature=-1.0),
            ValueError,
            "temperature",
        ),
        (
            lambda: kernels.infonce_from_embeddings(X, Y, implementation="x"),
            ValueError,
            "implementation",
        ),
        (lambda: kernels.infonce_from_embeddings(X, Y, axis_name="d"), ValueError, "axis_name"),
        (lambda: losses.infonce_bonus(0.1, negatives="some"), ValueError, "negatives"),
        (lambda: losses.infonce_bonus(0.0), ValueError, "temperature"),
        (lambda: losses.effective_entropy_bonus("knn"), ValueError, "estimator"),
        (lambda: losses.effective_entropy_bonus(kappa=3.0), ValueError, "kappa"),
        (
            lambda: losses.effective_entropy_bonus("vmf_kde", covariance_weight=1.0),
            ValueError,
            "covariance_weight",
        ),
        (lambda: losses.infonce_bonus(name="a/b"), ValueError, "name"),
    ],
)
def test_bad_input_names_the_argument(call, exc, arg):
    with pytest.raises(exc, match=f"`{arg}`"):
        call()


def test_missing_signals():
    with pytest.raises(KeyError, match="z2"):
        losses.infonce_bonus()({"z1": X}, (), None)
    with pytest.raises(KeyError, match="global"):
        losses.deep_infomax_bonus()({"local": X}, (), None)
