"""Loss-term composition: algebra, schedules, stateful terms, jit/vmap/sharding, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec
from jax.test_util import check_grads

import entreg

RNG = np.random.default_rng(0)
X = RNG.normal(size=(16, 5))
Y = RNG.integers(0, 3, size=16)
W0 = RNG.normal(size=(5, 3)) * 0.5


def base(w, x, y):
    logits = x @ w
    ce = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], -1))
    return ce, {"logits": logits, "mask": jnp.ones(x.shape[0], bool)}


def mean_entropy(s):
    return jnp.mean(entreg.entropy(s["logits"]))


def test_algebra_add_scale_disable():
    task, _ = base(W0, X, Y)
    h = mean_entropy({"logits": X @ W0})
    f = entreg.compose(
        base, entreg.penalty("p", mean_entropy, 0.3), entreg.bonus("b", mean_entropy, 0.1)
    )
    loss, (state, m) = f(W0, X, Y, state=f.init())
    np.testing.assert_allclose(loss, task + 0.3 * h - 0.1 * h, rtol=1e-12)
    np.testing.assert_allclose(m["b/loss"], -0.1 * h, rtol=1e-12)
    assert m["b/weight"] == pytest.approx(0.1) and m["p/value"] == pytest.approx(float(h))
    np.testing.assert_allclose(m["base/loss"], task)
    # Scaling a term scales its contribution and reported weight.
    g = entreg.compose(base, 2.0 * entreg.penalty("p", mean_entropy, 0.3))
    loss2, (_, m2) = g(W0, X, Y, state=g.init())
    np.testing.assert_allclose(loss2, task + 0.6 * h, rtol=1e-12)
    assert m2["p/weight"] == pytest.approx(0.6)
    # Disabling removes the contribution and the metrics; `+` and `without` edit compositions.
    d = entreg.compose(base, entreg.penalty("p", mean_entropy, 0.3).disabled())
    loss3, (_, m3) = d(W0, X, Y, state=d.init())
    np.testing.assert_allclose(loss3, task)
    assert "p/value" not in m3
    e = entreg.compose(base) + entreg.bonus("b", mean_entropy, 0.1)
    np.testing.assert_allclose(e(W0, X, Y, state=e.init())[0], task - 0.1 * h, rtol=1e-12)
    np.testing.assert_allclose(
        f.without("p")(W0, X, Y, state=f.init())[0], task - 0.1 * h, rtol=1e-12
    )


def test_schedules_evaluated_at_step():
    sched = optax.linear_schedule(1.0, 0.0, 10)
    f = entreg.compose(base, entreg.bonus("b", mean_entropy, weight=sched))
    h = mean_entropy({"logits": X @ W0})
    for step in (0, 5, 10, 20):
        _, (_, m) = f(W0, X, Y, state=f.init(), step=jnp.asarray(step))
        np.testing.assert_allclose(m["b/weight"], float(sched(step)), rtol=1e-6)
        np.testing.assert_allclose(m["b/loss"], -float(sched(step)) * h, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="step"):
        f(W0, X, Y, state=f.init())


def test_errors():
    with pytest.raises(ValueError, match="weight"):
        entreg.penalty("p", mean_entropy, -1.0)
    with pytest.raises(ValueError, match="lower"):
        entreg.constraint("c", mean_entropy, lower=1.0, upper=2.0, lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        entreg.constraint("c", mean_entropy, lower=1.0, lr=-0.1)
    with pytest.raises(ValueError, match="unique"):
        entreg.compose(base, entreg.bonus("a", mean_entropy), entreg.penalty("a", mean_entropy))
    with pytest.raises(ValueError, match="decay"):
        entreg.ema_metric("e", mean_entropy, decay=1.0)
    with pytest.raises(ValueError, match="high"):
        entreg.band_penalty("band", mean_entropy, low=2.0, high=1.0)
    f = entreg.compose(base, entreg.bonus("b", lambda s: entreg.entropy(s["logits"])))
    with pytest.raises(ValueError, match="scalar"):
        f(W0, X, Y, state=f.init())
    with pytest.raises(ValueError, match="init"):
        entreg.compose(base, entreg.bonus("b", mean_entropy))(W0, X, Y, state={})


def toy_entropy_problem(term, steps=600, lr=0.1):
    """A categorical 'policy' whose CE loss drives entropy to 0; `term` must hold it up."""
    target = jnp.zeros(8).at[0].set(1.0)

    def task(theta):
        return entreg.cross_entropy(theta, target_probs=target), {"logits": theta}

    f = entreg.compose(task, term)
    opt = optax.sgd(lr)

    @jax.jit
    def step(theta, opt_state, state, t):
        (_, (state, m)), g = jax.value_and_grad(f, has_aux=True)(theta, state=state, step=t)
        updates, opt_state = opt.update(g, opt_state)
        return optax.apply_updates(theta, updates), opt_state, state, m

    theta, state = jnp.zeros(8), f.init()
    opt_state = opt.init(theta)
    history = []
    for t in range(steps):
        theta, opt_state, state, m = step(theta, opt_state, state, t)
        history.append(m)
    return theta, state, history


def test_dual_ascent_holds_target_entropy():
    ent = lambda s: entreg.entropy(s["logits"])  # noqa: E731
    term = entreg.constraint("floor", ent, lower=1.0, lr=0.5, damping=3.0)
    theta, state, hist = toy_entropy_problem(term)
    h = np.array([m["floor/value"] for m in hist])
    assert np.all(np.abs(h[-200:] - 1.0) < 0.01)
    assert state["floor"].multiplier > 0
    # Pure Lagrangian (no damping): oscillates, but a small dual step still settles on the bound.
    _, _, pure = toy_entropy_problem(entreg.constraint("floor", ent, lower=1.0, lr=0.1), steps=1000)
    h = np.array([m["floor/value"] for m in pure])
    assert np.all(np.abs(h[-200:] - 1.0) < 0.03)
    assert np.abs(h[-200:] - 1.0).max() < np.abs(h[100:300] - 1.0).max()  # the swing decays
    # Without the constraint the same problem collapses well below the target.
    _, _, free = toy_entropy_problem(entreg.ema_metric("h", ent))
    assert free[-1]["h/value"] < 0.5
    # optax conventions: the state is a NamedTuple found by optax.tree.get.
    assert float(optax.tree.get(state, "multiplier")) == float(state["floor"].multiplier)


def test_ceiling_constraint_and_multiplier_stays_non_negative():
    term = entreg.constraint(
        "ceil", lambda s: entreg.entropy(s["logits"]), upper=0.5, lr=0.5, init_multiplier=3.0
    )
    _, state, hist = toy_entropy_problem(term, steps=300)
    lam = np.array([m["ceil/weight"] for m in hist])
    assert np.all(lam >= 0)
    # The CE task already pushes entropy below 0.5: the multiplier must decay to exactly 0.
    assert lam[-1] == 0.0


def test_state_round_trips_through_jit_and_matches_eager():
    terms = [
        entreg.constraint("c", mean_entropy, lower=2.0, lr=0.1, init_multiplier=0.2),
        entreg.band_penalty("band", mean_entropy, low=0.9, high=1.1, decay=0.9),
        entreg.ema_metric("ema", mean_entropy, decay=0.5),
    ]
    f = entreg.compose(base, *terms)
    jf = jax.jit(f)
    s_eager = s_jit = f.init()
    w = W0
    for t in range(4):
        w = w * 1.3  # sharper logits, so the band leaves its reference
        l_e, (s_eager, m_e) = f(w, X, Y, state=s_eager, step=t)
        l_j, (s_jit, m_j) = jf(w, X, Y, state=s_jit, step=t)
        np.testing.assert_allclose(l_e, l_j, rtol=1e-12)
        for k in m_e:
            np.testing.assert_allclose(m_e[k], m_j[k], rtol=1e-12, err_msg=k)
    assert jax.tree.structure(s_eager) == jax.tree.structure(f.init())
    assert isinstance(s_jit["band"], entreg.BandState) and int(s_jit["band"].count) == 4
    assert m_j["band/penalty"] > 0


def test_running_statistics_match_numpy():
    values = [0.5, 1.5, 1.0, 3.0, 2.0]
    state_ema = entreg.ema_metric("e", lambda s: s["v"], decay=0.8).init()
    state_mean = entreg.band_penalty("b", lambda s: s["v"], decay=None).init()
    ema = entreg.ema_metric("e", lambda s: s["v"], decay=0.8)
    band = entreg.band_penalty("b", lambda s: s["v"], decay=None)
    raw = 0.0
    for n, v in enumerate(values, 1):
        r = ema({"v": jnp.asarray(v)}, state_ema)
        state_ema = r.state
        raw = 0.8 * raw + 0.2 * v
        np.testing.assert_allclose(r.extras["ema"], raw / (1 - 0.8**n), rtol=1e-6)
        rb = band({"v": jnp.asarray(v)}, state_mean)
        # The penalty uses the mean of the PAST values (the current one at the first step).
        past = np.mean(values[: n - 1]) if n > 1 else v
        np.testing.assert_allclose(rb.extras["reference"], past, rtol=1e-6)
        state_mean = rb.state


def test_band_penalty_hinge_values_and_gradients():
    band = entreg.band_penalty("b", lambda s: s["v"], low=0.5, high=2.0, weight=3.0)
    ref_state = entreg.BandState(reference=jnp.asarray(1.0), count=jnp.asarray(1))
    for v, want, dwant in [(0.2, 3 * 0.3, -3.0), (1.0, 0.0, 0.0), (2.5, 3 * 0.5, 3.0)]:
        r = band({"v": jnp.asarray(v)}, ref_state)
        np.testing.assert_allclose(r.loss, want, rtol=1e-6, atol=1e-7)
        g = jax.grad(lambda x: band({"v": x}, ref_state).loss)(jnp.asarray(v))
        np.testing.assert_allclose(g, dwant, rtol=1e-6)
    sq = entreg.band_penalty("b", lambda s: s["v"], low=0.5, high=2.0, squared=True)
    np.testing.assert_allclose(sq({"v": jnp.asarray(3.0)}, ref_state).loss, 1.0, rtol=1e-6)


def test_gradients_of_every_term_match_finite_differences():
    ref = entreg.BandState(reference=jnp.asarray(0.6), count=jnp.asarray(2))
    for term, state in [
        (entreg.penalty("t", mean_entropy, 0.7), ()),
        (entreg.bonus("t", mean_entropy, 0.7), ()),
        (
            entreg.constraint("t", mean_entropy, lower=5.0, lr=0.1, init_multiplier=0.4),
            entreg.ConstraintState(jnp.asarray(0.4)),
        ),
        (
            entreg.constraint(
                "t", mean_entropy, upper=0.1, lr=0.1, init_multiplier=0.4, damping=2.0
            ),
            entreg.ConstraintState(jnp.asarray(0.4)),
        ),
        (entreg.band_penalty("t", mean_entropy, low=0.9, high=1.1, squared=True), ref),
        (entreg.band_penalty("t", mean_entropy, low=1.5, high=2.0), ref),
    ]:
        f = entreg.compose(base, term)
        check_grads(
            lambda w, f=f, state=state: f(w, X, Y, state={"t": state})[0],
            (W0,),
            order=1,
            modes=("rev",),
        )


def test_differentiate_through_metrics():
    f = entreg.compose(
        base,
        entreg.bonus("ent", mean_entropy, 0.01),
        entreg.constraint("c", mean_entropy, lower=3.0, lr=0.1),
    )
    g_metric = jax.grad(lambda w: f(w, X, Y, state=f.init())[1][1]["ent/value"])(W0)
    g_direct = jax.grad(lambda w: mean_entropy({"logits": X @ w}))(W0)
    np.testing.assert_allclose(g_metric, g_direct, rtol=1e-12)
    assert np.any(g_metric != 0)
    for k in ("c/violation", "base/loss", "loss"):
        g = jax.grad(lambda w, k=k: f(w, X, Y, state=f.init())[1][1][k])(W0)
        assert np.all(np.isfinite(g)) and np.any(g != 0), k


def test_vmap_over_signals_batch():
    f = entreg.compose(
        base,
        entreg.bonus("b", mean_entropy, 0.1),
        entreg.constraint("c", mean_entropy, lower=2.0, lr=0.1),
    )
    xs, ys = X.reshape(4, 4, 5), Y.reshape(4, 4)
    state = f.init()
    losses, (states, _) = jax.vmap(lambda x, y: f(W0, x, y, state=state))(xs, ys)
    for i in range(4):
        li, (si, _) = f(W0, xs[i], ys[i], state=state)
        np.testing.assert_allclose(losses[i], li, rtol=1e-12)
        np.testing.assert_allclose(states["c"].multiplier[i], si["c"].multiplier, rtol=1e-12)


def test_sharded_equals_single_device():
    # Auto axes (GSPMD): the base's own x @ w backward is ambiguous under explicit axes.
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    sh = NamedSharding(mesh, PartitionSpec("data"))
    f = entreg.compose(
        base,
        entreg.bonus("b", lambda s: entreg.aggregate(entreg.entropy(s["logits"]), s["mask"]), 0.1),
        entreg.constraint("c", mean_entropy, lower=2.0, lr=0.1, init_multiplier=0.3),
        entreg.band_penalty("band", mean_entropy, low=1.2, high=2.0),
    )
    vg = jax.value_and_grad(f, has_aux=True)
    (l1, (s1, m1)), g1 = vg(W0, X, Y, state=f.init(), step=0)
    (l8, (s8, m8)), g8 = jax.jit(vg)(
        W0, jax.device_put(X, sh), jax.device_put(Y, sh), state=f.init(), step=0
    )
    np.testing.assert_allclose(l8, l1, rtol=1e-12)
    np.testing.assert_allclose(g8, g1, rtol=1e-10)
    for k in m1:
        np.testing.assert_allclose(m8[k], m1[k], rtol=1e-12, err_msg=k)
    np.testing.assert_allclose(s8["c"].multiplier, s1["c"].multiplier, rtol=1e-12)
