"""entreg.knn: scikit-learn's KSG reproduced exactly, brute-force float64 KSG-1 / KSG-2 / total
correlation and Kozachenko-Leonenko entropy, masks, blocks, memory and errors."""

import functools
import math
import re

import jax
import jax.numpy as jnp
import mi_oracles as oracle
import numpy as np
import pytest
from sklearn.feature_selection import mutual_info_regression
from sklearn.preprocessing import scale

import entreg

RNG = np.random.default_rng(0)
X = RNG.normal(size=300)
Y = 0.6 * X + 0.8 * RNG.normal(size=300)
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def sklearn_preprocessed(x, y, seed):
    """scikit-learn's recipe: scale (no centring), then x's jitter, then y's, one stream."""
    rs = np.random.RandomState(seed)
    xs = scale(x[:, None].astype(np.float64), with_mean=False)
    xs += 1e-10 * np.maximum(1, np.mean(np.abs(xs), axis=0)) * rs.standard_normal(size=xs.shape)
    ys = scale(y[:, None].astype(np.float64), with_mean=False)[:, 0]
    ys += 1e-10 * max(1, np.mean(np.abs(ys))) * rs.standard_normal(size=ys.shape)
    return xs, ys


def test_reproduces_sklearn_mutual_info_regression():
    ksg = jit(lambda a, b: entreg.ksg_mutual_information(a, b, block_size=128))
    for seed in (0, 7):
        sk = mutual_info_regression(X[:, None], Y, random_state=seed)[0]
        # Same data, same arithmetic: equal up to the last ulps of the digamma sums.
        np.testing.assert_allclose(ksg(*sklearn_preprocessed(X, Y, seed)), sk, rtol=1e-13)
    # standardize=True without jitter: scikit-learn's value (its 1e-10 jitter breaks no tie).
    std = entreg.ksg_mutual_information(X, Y, standardize=True, block_size=128)
    np.testing.assert_allclose(std, mutual_info_regression(X[:, None], Y, random_state=0)[0], 1e-13)


def test_ksg_matches_brute_force_float64():
    x2 = np.c_[X[:120], RNG.normal(size=120)]
    y, z = Y[:120], RNG.normal(size=(120, 2)) + X[:120, None]
    f = jit(
        lambda a, b, c: {
            "ksg1": entreg.ksg_mutual_information(a, b, k=3, block_size=32),
            "ksg2": entreg.ksg_mutual_information(a, b, k=4, variant=2, block_size=50),
            "tc1": entreg.ksg_total_correlation([a, b, c], k=2, block_size=64),
            "tc2": entreg.ksg_total_correlation([a, b, c], k=3, variant=2),
        }
    )
    out = f(x2, y, z)
    np.testing.assert_allclose(out["ksg1"], oracle.ksg([x2, y], 3, 1), rtol=1e-12)
    np.testing.assert_allclose(out["ksg2"], oracle.ksg([x2, y], 4, 2), rtol=1e-12)
    np.testing.assert_allclose(out["tc1"], oracle.ksg([x2, y, z], 2, 1), rtol=1e-12)
    np.testing.assert_allclose(out["tc2"], oracle.ksg([x2, y, z], 3, 2), rtol=1e-12)


def test_masks_blocks_ties_and_keys():
    where = RNG.random(300) > 0.3
    few = np.arange(300) < 3
    xr, yr = np.round(X, 1), np.round(Y, 1)
    out = jit(
        lambda a, b, ar, br, w, w3, key: {
            "masked": entreg.ksg_mutual_information(
                jnp.where(w, a, jnp.nan), b, where=w, block_size=64
            ),
            "jittered": entreg.ksg_mutual_information(ar, br, key=key, standardize=True),
            "tied": entreg.ksg_mutual_information(ar, br),
            "plain": entreg.ksg_mutual_information(a, b),
            "few": entreg.ksg_mutual_information(a, b, where=w3),
            "grad": jax.grad(lambda c: entreg.ksg_mutual_information(c, b))(a),
        }
    )(X, Y, xr, yr, where, few, jax.random.key(0))
    np.testing.assert_allclose(out["masked"], oracle.ksg([X[where], Y[where]]), rtol=1e-12)
    # Ties: rounded data breaks strict counting; the relative jitter fixes it (sheet).
    assert abs(out["jittered"] - out["plain"]) < 0.1
    assert out["tied"] > out["jittered"] + 0.3  # tied counts inflate the estimate
    assert np.all(out["grad"] == 0)  # counts are piecewise constant
    assert out["few"] == 0  # fewer than k + 1 valid samples


def test_kl_entropy():
    x = RNG.normal(size=(200, 3))
    dup = x.copy()
    dup[1] = dup[0]
    where = np.arange(200) % 3 != 0
    one_d = RNG.normal(size=2000)
    out = jit(
        lambda a, d, w, o: {
            "max": entreg.kl_entropy(a, k=3, block_size=64),
            "euclidean": entreg.kl_entropy(a, k=1, norm="euclidean"),
            "grad": jax.grad(lambda b: entreg.kl_entropy(b, k=1, norm="euclidean"))(a),
            "dup": jax.value_and_grad(lambda b: entreg.kl_entropy(b, k=1))(d),
            "masked": entreg.kl_entropy(jnp.where(w[:, None], a, jnp.nan), where=w),
            "one_d": entreg.kl_entropy(o, block_size=1000),
        }
    )(x, dup, where, one_d)
    np.testing.assert_allclose(out["max"], oracle.kl_entropy(x, 3, "max"), rtol=1e-12)
    np.testing.assert_allclose(out["euclidean"], oracle.kl_entropy(x, 1, "euclidean"), rtol=1e-12)
    np.testing.assert_allclose(out["masked"], oracle.kl_entropy(x[where]), rtol=1e-12)
    # Sheet (N = 2000, k = 3): N(0, 1) gives 1.424 against 1.419; within 0.05 here.
    np.testing.assert_allclose(out["one_d"], 0.5 * math.log(2 * math.pi * math.e), atol=0.05)
    # Differentiable: matches finite differences of the oracle (neighbours fixed).
    eps = 1e-6
    x2 = x.copy()
    x2[5, 1] += eps
    fd = (oracle.kl_entropy(x2, 1, "euclidean") - oracle.kl_entropy(x, 1, "euclidean")) / eps
    np.testing.assert_allclose(out["grad"][5, 1], fd, rtol=1e-4)
    # A duplicated point (k = 1): -inf, with a finite gradient for the rest.
    h, g = out["dup"]
    assert h == -np.inf and np.all(np.isfinite(g))


def test_blockwise_memory_is_linear_in_n():
    """KSG at N = 20000 compiles to well under 1 GiB of temporaries (an N x N float32 distance
    matrix alone is 1.6 GB)."""
    x = jax.ShapeDtypeStruct((20000,), jnp.float32)
    compiled = jit(lambda a, b: entreg.ksg_mutual_information(a, b, block_size=256))
    temp = compiled.lower(x, x).compile().memory_analysis().temp_size_in_bytes
    assert temp < 2**30 / 4


@pytest.mark.parametrize(
    "call,exc,arg",
    [
        (lambda: entreg.ksg_mutual_information(X, Y, k=300), ValueError, "k"),
        (lambda: entreg.ksg_mutual_information(X, Y, k=0), ValueError, "k"),
        (lambda: entreg.ksg_mutual_information(X, Y[:10]), ValueError, "variables[1]"),
        (lambda: entreg.ksg_mutual_information(X, Y, variant=3), ValueError, "variant"),
        (lambda: entreg.ksg_mutual_information(X.astype(int), Y), TypeError, "variables[0]"),
        (
            lambda: entreg.ksg_mutual_information(X, Y, where=X > 0.0 * X[:5, None]),
            ValueError,
            "where",
        ),
        (lambda: entreg.ksg_total_correlation([X]), ValueError, "variables"),
        (lambda: entreg.ksg_total_correlation(np.zeros((3, 3))), TypeError, "variables"),
        (lambda: entreg.kl_entropy(X, norm="l1"), ValueError, "norm"),
        (lambda: entreg.kl_entropy(np.zeros((2, 2, 2))), ValueError, "x"),
        (lambda: entreg.kl_entropy(X, block_size=0), ValueError, "block_size"),
    ],
)
def test_bad_input_names_the_argument(call, exc, arg):
    with pytest.raises(exc, match=re.escape(f"`{arg}`")):
        call()
