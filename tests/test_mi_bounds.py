"""entreg.mi_bounds and entreg.critics: float64 oracles, closed-form optimal critics on
Gaussians, identities, training gradients, masks, sharding and errors.

Most checks go through a few jitted functions that evaluate every bound at once, so one
compilation serves many assertions."""

import functools
import math

import jax
import jax.numpy as jnp
import mi_oracles as oracle
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads

import entreg

RNG = np.random.default_rng(0)
# Rectangular (3 extra negative columns); a scale of 3 puts ~10% of the scores beyond SMILE's
# tau = 5, so its clipping is exercised.
S = RNG.normal(size=(6, 9)) * 3.0
POS = np.zeros((6, 9), bool)
POS[np.arange(6), RNG.permutation(9)[:6]] = True  # one positive per row, not the diagonal
VALID = RNG.random((6, 9)) > 0.15
VALID |= POS
VALID[4] = False  # a fully masked row
S[0, np.argmax(POS[0])], S[1, 1] = 8.0, -7.0  # beyond SMILE's tau = 5 (a positive, a diagonal)
LOG_A = RNG.normal(size=9) * 0.3
# float64 sums of ~50 terms of size ~10: round-off ~1e-14.
TOL = dict(rtol=1e-12, atol=1e-12)
EYE6, ALL6 = np.eye(6, dtype=bool), np.ones((6, 6), bool)


def _baseline(m, dtype):
    """log a(y_j) for the TUBA tests, in the scores' dtype."""
    return (0.3 * np.sin(np.arange(m))).astype(dtype)


BOUNDS = {
    "nwj": (entreg.nwj_bound, oracle.nwj),
    "dv": (entreg.dv_bound, oracle.dv),
    "infonce": (
        functools.partial(entreg.infonce_bound, direction="both"),
        functools.partial(oracle.infonce, direction="both"),
    ),
    "tuba": (
        lambda s, **kw: entreg.tuba_bound(s, _baseline(s.shape[-1], s.dtype), **kw),
        lambda s, *a: oracle.tuba(s, _baseline(s.shape[-1], np.float64), *a),
    ),
    "js": (entreg.js_bound, lambda s, *a: oracle.tuba(s, np.zeros(s.shape[1]), *a)),
    "jsd": (entreg.jsd_bound, lambda s, *a: oracle.js_objective(s, *a) + 2 * math.log(2)),
    "smile": (entreg.smile_bound, lambda s, *a: oracle.smile(s, 5.0, *a)),
    "mine": (lambda s, **kw: entreg.mine_bound(s, **kw)[0], oracle.dv),
}
# Bounds whose gradient is that of their value (the others carry a training gradient).
EXACT_GRADIENT = ("nwj", "dv", "infonce", "tuba", "jsd")
# Compilation dominates these tests: XLA's backend optimizations do not pay off here.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _all(s, positives, where):
    return {n: f(s, positives=positives, where=where) for n, (f, _) in BOUNDS.items()}


ALL = jit(_all)


@jit
def VALUES_AND_GRADS(s, positives, where):  # noqa: N802
    return {
        n: jax.value_and_grad(lambda z, f=f: f(z, positives=positives, where=where))(s)
        for n, (f, _) in BOUNDS.items()
    }


@jit
def VARIANTS(s, positives, where):  # noqa: N802
    kw = dict(positives=positives, where=where)
    return {
        "rows": entreg.infonce_bound(s, **kw),
        "columns": entreg.infonce_bound(s, direction="columns", **kw),
        "smile_inf": entreg.smile_bound(s, tau=None, **kw),
    }


def test_values_match_float64_oracle():
    square = S[:, :6]
    plain = ALL(square, EYE6, ALL6)  # diagonal positives
    dirty = np.where(VALID, S, np.nan)  # garbage in every masked slot
    masked = ALL(dirty, POS, VALID)
    for name, (_, ref) in BOUNDS.items():
        np.testing.assert_allclose(plain[name], ref(square), **TOL, err_msg=name)
        np.testing.assert_allclose(masked[name], ref(S, POS, VALID), **TOL, err_msg=name)
    variants = VARIANTS(dirty, POS, VALID)
    np.testing.assert_allclose(variants["rows"], oracle.infonce(S, POS, VALID), **TOL)
    np.testing.assert_allclose(variants["columns"], oracle.infonce(S, POS, VALID, "columns"), **TOL)
    np.testing.assert_allclose(variants["smile_inf"], oracle.smile(S, None, POS, VALID), **TOL)
    assert np.isclose(entreg.nwj_bound(square, base=2.0), oracle.nwj(square) / math.log(2))
    # The default positives are the diagonal.
    np.testing.assert_allclose(entreg.dv_bound(square), plain["dv"], rtol=1e-15)


def test_constant_critic_oracles():
    for c in (0.0, 1.0, -2.5):
        v = ALL(np.full((6, 6), c), EYE6, ALL6)
        js = -np.logaddexp(0, -c) - np.logaddexp(0, c)
        for name in ("infonce", "dv", "mine"):
            np.testing.assert_allclose(v[name], 0.0, atol=1e-15, err_msg=name)
        np.testing.assert_allclose(v["nwj"], c - math.exp(c - 1), rtol=1e-14)
        np.testing.assert_allclose(v["jsd"], js + 2 * math.log(2), atol=1e-15)
        np.testing.assert_allclose(v["js"], c + 1 - math.exp(c), atol=1e-15)
    # The sheet's J(f) oracles: -2 log 2 at c = 0, -1.626523 at c = 1.
    zero, one = ALL(np.zeros((6, 6)), EYE6, ALL6), ALL(np.ones((6, 6)), EYE6, ALL6)
    np.testing.assert_allclose(zero["jsd"] - 2 * math.log(2), -1.386294, atol=1e-6)
    np.testing.assert_allclose(one["jsd"] - 2 * math.log(2), -1.626523, atol=1e-6)
    np.testing.assert_allclose(zero["nwj"], -1 / math.e, rtol=1e-14)


def test_saturated_critics_infonce_reaches_log_n():
    """(Finite gradients at +-1e4 and bf16 scores: tests/adversarial_mutual_information.py.)"""
    s = 1e4 * np.eye(6)
    v = ALL(s, EYE6, ALL6)
    np.testing.assert_allclose(v["infonce"], math.log(6), rtol=1e-12)
    np.testing.assert_allclose(v["dv"], 1e4, rtol=1e-12)
    v32 = VALUES_AND_GRADS(jnp.asarray(s, jnp.float32), EYE6, ALL6)
    assert v32["infonce"][0].dtype == jnp.float32
    np.testing.assert_allclose(v32["infonce"][0], math.log(6), rtol=1e-6)
    for name, (_, g) in v32.items():
        assert np.all(np.isfinite(g)), name


def test_overflowing_partition_gives_minus_inf_with_finite_gradient():
    s = np.zeros((6, 6), np.float32)
    s[0, 1] = 200.0  # e^200 overflows float32 (whose gradient cap is e^44)
    out = VALUES_AND_GRADS(jnp.asarray(s), EYE6, ALL6)
    for name in ("nwj", "js", "tuba"):
        value, grad = out[name]
        assert value == -np.inf, name
        assert np.all(np.isfinite(grad)), name
    assert out["nwj"][1][0, 1] < 0 and out["tuba"][1][0, 1] < 0
    # Below the cap the gradient is exact: d NWJ / dS_01 = -e^{S_01 - 1} / 30.
    s[0, 1] = 20.0
    np.testing.assert_allclose(
        VALUES_AND_GRADS(jnp.asarray(s), EYE6, ALL6)["nwj"][1][0, 1],
        -math.exp(19.0) / 30,
        rtol=1e-5,
    )


@jit
def _identities(s, extra_cols, q, logit):
    s.shape[0]
    shifted = extra_cols + q[:, :1] * 10
    return {
        "dv": entreg.dv_bound(extra_cols),
        "nwj": entreg.nwj_bound(extra_cols),
        "rows": entreg.infonce_bound(extra_cols),
        "columns": entreg.infonce_bound(extra_cols, direction="columns"),
        "rows_shift": entreg.infonce_bound(shifted) - entreg.infonce_bound(extra_cols),
        "cols_shift": entreg.infonce_bound(s + q[:1, :] * 10, direction="columns")
        - entreg.infonce_bound(s, direction="columns"),
        "dv_shift": entreg.dv_bound(s + 7.0) - entreg.dv_bound(s),
        "interp": entreg.interpolated_bound(s, q[0], logit),
    }


@settings(max_examples=25)
@given(st.floats(0.1, 30.0), st.floats(-6.0, 6.0), st.integers(0, 2**31 - 1))
def test_identities(scale, logit, seed):
    """DV >= NWJ per critic; InfoNCE <= log K (rows) and <= log N (columns); InfoNCE invariant
    to a constant per row (rows) or column (columns), DV to a global one;
    I_alpha <= 1 + log(K / alpha)."""
    rng = np.random.default_rng(seed)
    n, m = 5, 8
    wide = rng.normal(size=(n, m)) * scale
    v = _identities(wide[:, :n], wide, rng.normal(size=(n, n)), logit)
    assert v["dv"] >= v["nwj"] - 1e-12
    assert v["rows"] <= math.log(m) + 1e-12
    assert v["columns"] <= math.log(n) + 1e-12
    for k in ("rows_shift", "cols_shift", "dv_shift"):
        assert abs(v[k]) < 1e-9, k
    alpha = 1 / (1 + math.exp(-logit))
    assert v["interp"] <= 1 + math.log((n - 1) / alpha) + 1e-9


def test_closed_form_optimal_critics_on_the_gaussian_staircase():
    """Analytic critics log r on d = 1, rho = 0.8 (I = 0.511): DV(log r) and NWJ(1 + log r)
    estimate I, NWJ(log r) is low by 1/e, InfoNCE(log r) stays below log N and I."""
    rho, n = 0.8, 1000
    truth = -0.5 * math.log(1 - rho**2)
    x, y = oracle.staircase(n, rho, 1, np.random.default_rng(1))
    lr = oracle.log_ratio(x, y, rho)
    v = jit(
        lambda z: {
            "dv": entreg.dv_bound(z),
            "nwj1": entreg.nwj_bound(z + 1),
            "nwj": entreg.nwj_bound(z),
            "js": entreg.js_bound(z),
            "nce": entreg.infonce_bound(z),
            "smile_inf": entreg.smile_bound(z, tau=None),
        }
    )(lr)
    # Standard errors: the joint mean sqrt(Var log r / n) ~ 0.03, the partition mean
    # sqrt((e^{2I} - 1) / n^2) ~ 0.002: 0.1 is > 3 sigma.
    np.testing.assert_allclose(v["dv"], truth, atol=0.1)
    np.testing.assert_allclose(v["nwj1"], truth, atol=0.1)
    np.testing.assert_allclose(v["nwj"], truth - 1 / math.e, atol=0.1)
    np.testing.assert_allclose(v["nwj1"] - v["nwj"], 1 / math.e, atol=0.02)
    np.testing.assert_allclose(v["js"], v["nwj1"], rtol=1e-12)
    assert truth - 0.1 < v["nce"] < min(math.log(n), truth + 0.05)
    np.testing.assert_allclose(v["smile_inf"], v["dv"], rtol=1e-12)


def test_training_gradients():
    """js_bound and smile_bound carry the gradient of the f-GAN JS objective, jsd_bound is it
    (+ 2 log 2); MINE's gradient divides the partition gradient by its moving average."""
    s = S[:, :6]
    n = 6
    eye = np.eye(n, dtype=bool)
    sig = 1 / (1 + np.exp(-s))
    g_js = np.where(eye, (1 - sig) / n, -sig / (n * (n - 1)))
    out = VALUES_AND_GRADS(s, EYE6, ALL6)
    for name in ("js", "smile", "jsd"):
        np.testing.assert_allclose(out[name][1], g_js, **TOL, err_msg=name)
    # MINE: first step = the DV gradient; then the debiased EMA m (rate 0.1) of E_B[e^f].
    step = jax.jit(jax.grad(lambda z, st: entreg.mine_bound(z, st, decay=0.9), has_aux=True))
    state, m = entreg.MineState.init(jnp.float64), None
    for t, b in enumerate([s, s * 0.5 + 1.0, s * 2.0]):
        e_q = np.exp(b[~eye]).mean()
        w = 0.1 / (1 - 0.9 ** (t + 1))
        m = e_q if m is None else m + w * (e_q - m)
        grad, new_state = step(b, state)
        g_ref = np.where(eye, 1 / n, -np.exp(b) / (n * (n - 1)) / m)
        np.testing.assert_allclose(grad, g_ref, **TOL)
        np.testing.assert_allclose(np.exp(new_state.log_partition), m, rtol=1e-12)
        state = new_state
    assert int(state.count) == 3 and state.log_partition.dtype == jnp.float64
    np.testing.assert_allclose(out["mine"][1], out["dv"][1], **TOL)  # the first step
    # A batch without negatives leaves the state alone.
    same = entreg.mine_bound(np.zeros((1, 1)), state)[1]
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(a == b), same, state))


def test_exact_gradients_and_masked_garbage_never_leaks():
    s = jnp.asarray(S)
    clean = VALUES_AND_GRADS(jnp.where(VALID, s, 0.0), POS, VALID)
    dirty = VALUES_AND_GRADS(jnp.where(VALID, s, jnp.nan), POS, VALID)
    for name in BOUNDS:
        np.testing.assert_array_equal(clean[name][0], dirty[name][0], err_msg=name)
        np.testing.assert_array_equal(clean[name][1], dirty[name][1], err_msg=name)
        assert np.all(np.asarray(dirty[name][1])[~VALID] == 0), name

    # Gradients against central differences of the (already compiled) values, along random
    # directions of the valid entries: a wrong partial derivative of any bound shows up.
    rng = np.random.default_rng(1)
    for _ in range(3):
        v = np.where(VALID, rng.normal(size=S.shape), 0.0)
        plus, minus = ALL(S + 1e-6 * v, POS, VALID), ALL(S - 1e-6 * v, POS, VALID)
        for name in EXACT_GRADIENT:
            fd = (plus[name] - minus[name]) / 2e-6
            np.testing.assert_allclose(np.sum(clean[name][1] * v), fd, rtol=1e-6, err_msg=name)
    interp = jax.jit(entreg.interpolated_bound)  # (compiler options only at the top level)
    check_grads(interp, (s[:, :6], jnp.asarray(LOG_A[:6]), 0.3), order=1, modes=("rev",))


def test_empty_batches_give_zero_with_zero_gradient():
    s = jnp.asarray(S[:, :6])
    for where in (np.zeros((6, 6), bool), EYE6):  # nothing; no negatives
        for name, (v, g) in VALUES_AND_GRADS(s, EYE6, where).items():
            assert v == 0 and np.all(g == 0), name


def test_interpolated_bound_oracle_limits_and_padding():
    s = S[:, :6]
    log_q = RNG.normal(size=6)
    f = jit(entreg.interpolated_bound)
    for logit in (-2.0, 0.0, 3.0):
        np.testing.assert_allclose(f(s, log_q, logit), oracle.interpolated(s, log_q, logit), **TOL)
    keep = np.array([True, True, False, True, True, True])
    dirty = np.where(keep[:, None] & keep[None, :], s, np.nan)
    np.testing.assert_allclose(
        entreg.interpolated_bound(dirty, np.where(keep, log_q, np.nan), 0.5, where=keep),
        oracle.interpolated(s, log_q, 0.5, keep),
        **TOL,
    )
    # alpha -> 0 is TUBA with the baseline q.
    np.testing.assert_allclose(f(s, log_q, -60.0), entreg.tuba_bound(s, log_q), rtol=1e-12)
    # One dominant score per column: the leave-one-out sum must not cancel to log(0).
    spiky = s.copy()
    spiky[2, 2] = 60.0
    np.testing.assert_allclose(f(spiky, log_q, 1.0), oracle.interpolated(spiky, log_q, 1.0), **TOL)


def test_barber_agakov():
    lq = RNG.normal(size=(3, 5))
    where = RNG.random((3, 5)) > 0.3
    ref = [1.5 + lq[i][where[i]].mean() for i in range(3)]
    np.testing.assert_allclose(entreg.barber_agakov_bound(lq, 1.5, where=where), ref, **TOL)


def test_vmap_and_batch_axes_agree():
    batch = RNG.normal(size=(3, 6, 6))
    masks = (np.broadcast_to(EYE6, batch.shape), np.broadcast_to(ALL6, batch.shape))
    mapped = jit(jax.vmap(_all))(batch, *masks)
    batched = ALL(batch, *masks)
    for i in range(3):
        single = ALL(batch[i], EYE6, ALL6)
        for name in BOUNDS:
            np.testing.assert_allclose(mapped[name][i], single[name], **TOL, err_msg=name)
            np.testing.assert_allclose(batched[name][i], single[name], **TOL, err_msg=name)
    logits = np.array([0.0, 1.0, -1.0])
    interp = entreg.interpolated_bound(batch, np.zeros((3, 6)), logits)
    for i, logit in enumerate(logits):
        ref = oracle.interpolated(batch[i], np.zeros(6), logit)
        np.testing.assert_allclose(interp[i], ref, **TOL)


def test_row_sharded_bounds_equal_single_device():
    """Each of 8 devices holds 2 rows of a [16, 20] score matrix: values and gradients of every
    bound (default diagonal positives shifted per device) equal the single-device ones."""
    mesh = jax.make_mesh((8,), ("rows",), axis_types=(jax.sharding.AxisType.Auto,))
    s = RNG.normal(size=(16, 20)) * 2
    where = RNG.random((16, 20)) > 0.1
    # One bound per kind of cross-device reduction: means, LME, row and column LSE, EMA.
    fns = [BOUNDS[n][0] for n in ("nwj", "dv", "infonce", "jsd", "mine")]

    def total(z, w, axis_name=None):
        return sum(f(z, where=w, axis_name=axis_name) * (i + 1) for i, f in enumerate(fns))

    sharded = jax.shard_map(
        lambda z, w: total(z, w, "rows"),
        mesh=mesh,
        in_specs=(P("rows"), P("rows")),
        out_specs=P(),
    )
    v8, g8 = jit(jax.value_and_grad(sharded))(s, where)
    v1, g1 = jit(jax.value_and_grad(total))(s, where)
    np.testing.assert_allclose(v8, v1, rtol=1e-12)
    np.testing.assert_allclose(g8, g1, rtol=1e-10, atol=1e-14)


def test_separable_and_concat_critics():
    gx, hy = RNG.normal(size=(4, 3)), RNG.normal(size=(5, 3))
    np.testing.assert_allclose(
        entreg.separable_scores(gx, hy, temperature=0.5), gx @ hy.T / 0.5, **TOL
    )
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    np.testing.assert_allclose(
        entreg.separable_scores(gx, hy, similarity="cosine"), unit(gx) @ unit(hy).T, **TOL
    )
    bf = entreg.separable_scores(gx.astype(jnp.bfloat16), hy.astype(jnp.bfloat16))
    assert bf.dtype == jnp.float32
    w = RNG.normal(size=(5, 1))

    def critic(xy):
        return jnp.tanh(xy @ w)[..., 0] + xy[..., 0] * xy[..., -1]

    x, y = RNG.normal(size=(7, 2)), RNG.normal(size=(6, 3))
    ref = np.array([[critic(np.r_[x[i], y[j]]) for j in range(6)] for i in range(7)])
    np.testing.assert_allclose(entreg.concat_scores(critic, x, y, block_size=3), ref, **TOL)
    # No [N, M, dx + dy] intermediate: compiled temp memory well below one such tensor.
    big = jnp.ones((512, 16), jnp.float32)
    lin = jnp.ones((32,), jnp.float32)
    compiled = jax.jit(
        lambda a, b: entreg.concat_scores(lambda z: jnp.tanh(z @ lin), a, b, block_size=16)
    )
    temp = compiled.lower(big, big).compile().memory_analysis().temp_size_in_bytes
    assert temp < 512 * 512 * 32 * 4 / 8


def trace(f, *shapes):
    return jax.eval_shape(f, *(jax.ShapeDtypeStruct(s, d) for s, d in shapes))


F = jnp.float32
Z3 = np.zeros((3, 3))


@pytest.mark.parametrize(
    "call,exc,arg",
    [
        (lambda: trace(entreg.nwj_bound, ((4, 3), F)), ValueError, "scores"),
        (lambda: trace(entreg.dv_bound, ((4,), F)), ValueError, "scores"),
        (lambda: trace(entreg.infonce_bound, ((4, 4), jnp.int32)), TypeError, "scores"),
        (lambda: entreg.infonce_bound(Z3, direction="up"), ValueError, "direction"),
        (lambda: entreg.dv_bound(Z3, where=np.ones((3, 3))), TypeError, "where"),
        (lambda: entreg.dv_bound(Z3, positives=np.eye(2, dtype=bool)), ValueError, "positives"),
        (lambda: entreg.interpolated_bound(np.zeros((3, 4)), Z3[0], 0.0), ValueError, "scores"),
        (lambda: entreg.interpolated_bound(Z3, np.zeros(4), 0.0), ValueError, "log_baseline"),
        (lambda: entreg.tuba_bound(Z3, np.zeros(2)), ValueError, "log_baseline"),
        (lambda: entreg.smile_bound(Z3, tau=0.0), ValueError, "tau"),
        (lambda: entreg.mine_bound(Z3, decay=1.0), ValueError, "decay"),
        (lambda: entreg.mine_bound(Z3, (0.0, 0)), TypeError, "state"),
        (lambda: entreg.nwj_bound(Z3, base=1.0), ValueError, "base"),
        (lambda: entreg.infonce_bound(Z3, axis_name="rows"), ValueError, "axis_name"),
        (
            lambda: entreg.separable_scores(np.zeros((3, 2)), np.zeros((3, 4))),
            ValueError,
            "x_embeddings",
        ),
        (
            lambda: entreg.separable_scores(Z3, Z3, temperature=0.0),
            ValueError,
            "temperature",
        ),
        (lambda: entreg.concat_scores(lambda z: z, Z3, Z3), ValueError, "critic"),
        (lambda: entreg.barber_agakov_bound(np.zeros(3), np.zeros(2)), ValueError, "entropy"),
    ],
)
def test_bad_input_names_the_argument(call, exc, arg):
    with pytest.raises(exc, match=f"`{arg}`"):
        call()
