"""aggregate() against a numpy reference; KL estimators against their definitions."""

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.sharding import NamedSharding, PartitionSpec

import entreg
from tests import oracles

MODES = ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]


@given(
    hnp.arrays(np.float64, (4, 6), elements=st.floats(-10, 10, width=64)),
    hnp.arrays(np.bool_, (4, 6)),
    st.sampled_from(MODES),
)
def test_aggregate_matches_numpy(values, mask, mode):
    np.testing.assert_allclose(
        entreg.aggregate(values, mask, mode),
        oracles.aggregate(values, mask, mode),
        rtol=1e-12,
        atol=1e-12,
    )


def test_explicit_normalizers_and_leading_axes():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(2, 3, 5))
    m = rng.random((2, 3, 5)) > 0.3
    for mode in MODES:
        kw = dict(num_tokens=40.0, num_sequences=8.0, norm_constant=7.0)
        got = entreg.aggregate(v, m, mode, **{k: kw[k] for k in _kw_for(mode)})
        want = oracles.aggregate(v, m, mode, **{k: kw[k] for k in _kw_for(mode)})
        np.testing.assert_allclose(got, want, rtol=1e-12)


def _kw_for(mode):
    if mode == "token-mean":
        return ["num_tokens"]
    if mode == "seq-mean-token-sum-norm":
        return ["num_sequences", "norm_constant"]
    return ["num_sequences"]


def test_empty_batch_zero_value_and_grad_and_nan_padding_ignored():
    v = np.array([[1.0, np.nan], [np.inf, 2.0]])
    m = np.array([[1, 0], [0, 1]], np.float32)
    for mode in MODES:
        assert np.isfinite(entreg.aggregate(v, m, mode))
        zero = entreg.aggregate(v, np.zeros_like(m), mode)
        assert zero == 0
        g = jax.grad(lambda x, mode=mode: entreg.aggregate(x, np.zeros_like(m), mode))(v)
        assert np.all(g == 0)


def test_microbatch_accumulation_with_global_counts_is_exact():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(8, 10))
    m = rng.random((8, 10)) > 0.4
    for mode in MODES:
        full = entreg.aggregate(v, m, mode)
        counts = dict(num_tokens=m.sum(), num_sequences=(m.sum(-1) > 0).sum())
        kw = {k: counts[k] for k in _kw_for(mode) if k in counts}
        parts = sum(
            entreg.aggregate(v[i : i + 2], m[i : i + 2], mode, **kw) for i in range(0, 8, 2)
        )
        np.testing.assert_allclose(parts, full, rtol=1e-12)


def test_axis_name_psums_counts_in_shard_map():
    mesh = jax.make_mesh((8,), ("data",))
    rng = np.random.default_rng(2)
    v = rng.normal(size=(16, 6))
    m = rng.random((16, 6)) > 0.5
    for mode in MODES:

        def local(v, m, mode=mode):
            return jax.lax.psum(entreg.aggregate(v, m, mode, axis_name="data"), "data")

        f = jax.jit(
            jax.shard_map(
                local,
                mesh=mesh,
                out_specs=PartitionSpec(),
                in_specs=(PartitionSpec("data"), PartitionSpec("data")),
            )
        )
        sh = NamedSharding(mesh, PartitionSpec("data"))
        got = f(jax.device_put(v, sh), jax.device_put(m, sh))
        np.testing.assert_allclose(got, oracles.aggregate(v, m, mode), rtol=1e-12)


def test_aggregate_jit_sharded_equals_single_device():
    mesh = jax.make_mesh((8,), ("data",))
    sh = NamedSharding(mesh, PartitionSpec("data"))
    rng = np.random.default_rng(3)
    v = rng.normal(size=(16, 6))
    m = rng.random((16, 6)) > 0.5
    for mode in MODES:
        f = jax.jit(jax.value_and_grad(lambda x, mode=mode: entreg.aggregate(x, m, mode)))
        a, ga = f(jax.device_put(v, sh))
        b, gb = jax.value_and_grad(lambda x, mode=mode: entreg.aggregate(x, m, mode))(v)
        np.testing.assert_allclose(a, b, rtol=1e-12)
        np.testing.assert_allclose(ga, gb, rtol=1e-12)


def test_aggregate_errors():
    v = np.zeros((2, 3))
    with pytest.raises(ValueError, match="mode"):
        entreg.aggregate(v, v, "token_mean")
    with pytest.raises(ValueError, match="mask"):
        entreg.aggregate(v, np.zeros((2, 4)), "token-mean")
    with pytest.raises(TypeError, match="values"):
        entreg.aggregate(np.zeros((2, 3), np.int32), v, "token-mean")


def test_kl_estimators():
    rng = np.random.default_rng(4)
    lp, lq = rng.normal(size=(2, 50)) - 2
    d = lp - lq
    np.testing.assert_allclose(entreg.kl_estimate(lp, lq, "k1"), d)
    np.testing.assert_allclose(entreg.kl_estimate(lp, lq, "k2"), d**2 / 2)
    np.testing.assert_allclose(entreg.kl_estimate(lp, lq, "k3"), np.exp(-d) - 1 + d, atol=1e-15)
    np.testing.assert_allclose(entreg.kl_estimate(lp, lq, "abs"), np.abs(d))
    assert np.all(entreg.kl_estimate(lp, lq, "k3") >= 0)
    # verl low_var_kl: clamp the log-ratio to +-20, the estimate to +-10.
    big = entreg.kl_estimate(
        np.array([0.0]), np.array([50.0]), "k3", log_ratio_clip=20, value_clip=10
    )
    assert big == 10
    # The log-ratio clip applies on its own, without a value clip.
    d = np.array([-30.0, -5.0, 0.0, 5.0, 30.0])
    for kind, f in {
        "k1": lambda x: x,
        "k2": lambda x: x**2 / 2,
        "k3": lambda x: np.exp(-x) - 1 + x,
        "abs": np.abs,
    }.items():
        np.testing.assert_allclose(
            entreg.kl_estimate(d, np.zeros(5), kind, log_ratio_clip=20.0),
            f(np.clip(d, -20, 20)),
            rtol=1e-12,
        )
    # |d| has gradient 0 at d = 0 (on-policy KL-Cov contributes nothing).
    assert jax.grad(lambda x: entreg.kl_estimate(x, x * 1.0, "abs").sum())(lp).sum() == 0
    assert jax.grad(lambda x: entreg.kl_estimate(x, jnp.zeros(()) + 1.0, "abs"))(3.0) == 1


def test_kl_estimate_at_infinite_and_overflowing_log_ratios():
    inf = np.inf
    lp = np.array([-inf, 0.0, -inf, -800.0, 0.0])
    lq = np.array([-1.0, -inf, -inf, 0.0, 0.0])
    # d = -inf, +inf, both excluded (d = 0), e^{-d} overflowing, 0.
    np.testing.assert_array_equal(entreg.kl_estimate(lp, lq, "k3"), [inf, inf, 0.0, inf, 0.0])
    np.testing.assert_array_equal(entreg.kl_estimate(lp, lq, "k2"), [inf, inf, 0.0, 3.2e5, 0.0])
    np.testing.assert_array_equal(entreg.kl_estimate(lp, lq, "k1"), [-inf, inf, 0.0, -800, 0.0])
    np.testing.assert_array_equal(  # any clip >= 0
        entreg.kl_estimate(np.array([-3.0, 0.0]), np.zeros(2), "k3", value_clip=0.5), [0.5, 0.0]
    )
    clipped = entreg.kl_estimate(lp, lq, "k3", value_clip=10.0)
    np.testing.assert_array_equal(clipped, [10.0, 10.0, 0.0, 10.0, 0.0])
    # Where the estimate is clipped or infinite, the gradient is 0, never NaN.
    for kind in ("k2", "k3"):
        g = jax.grad(lambda x, kind=kind: entreg.kl_estimate(x, lq, kind, value_clip=10.0).sum())
        grad = np.asarray(g(lp))
        assert np.all(np.isfinite(grad)) and np.all(grad[[0, 1, 3]] == 0)
        far = jax.grad(lambda x, kind=kind: entreg.kl_estimate(x, 0.0 * x, kind))(-100.0)
        assert np.isfinite(far)


def test_kl_estimators_unbiased_in_expectation():
    # E_{y~p}[k1] = E_{y~p}[k3] = KL(p || q) exactly, by enumeration over the support.
    rng = np.random.default_rng(5)
    zp, zq = rng.normal(size=(2, 7))
    p, q = oracles.softmax(zp), oracles.softmax(zq)
    lp, lq = np.log(p), np.log(q)
    kl = oracles.kl(p, q)
    for kind in ("k1", "k3"):
        np.testing.assert_allclose((p * entreg.kl_estimate(lp, lq, kind)).sum(), kl, rtol=1e-10)


def test_kl_estimate_errors():
    with pytest.raises(ValueError, match="kind"):
        entreg.kl_estimate(np.zeros(3), np.zeros(3), "k4")
    with pytest.raises(ValueError, match="log_q"):
        entreg.kl_estimate(np.zeros(3), np.zeros(4), "k1")
    with pytest.raises(ValueError, match="value_clip"):
        entreg.kl_estimate(np.zeros(3), np.zeros(3), "k1", value_clip=-1.0)
