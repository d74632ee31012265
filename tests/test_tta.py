"""Tests of losses/tta.py (filters, weights, losses, terms) and losses/adaptation.py (the loop).

Oracles are float64 numpy written from the papers' reference code (boolean indexing, Python
control flow, ``None`` for "not yet initialised"), never restating the static-shape versions.
Tolerances: the jax side also runs in float64 (conftest enables x64), so values agree to a few
ulps; 1e-12 relative leaves room for different summation orders over <= 64 terms. Every call
is jitted (one compilation each): op-by-op dispatch compiles every primitive and costs several
times more. Eager behaviour is covered by tests/adversarial_tta.py.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from adversarial_tta import Net
from entreg.losses import adaptation
from flax import nnx

import entreg
from entreg import losses

RTOL = 1e-12  # float64 on both sides; summation order differs
rng = np.random.default_rng(0)


# ----------------------------------------------------------------------------- numpy oracles


def np_softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_entropy(z):
    p = np_softmax(z)
    logp = np.log(np.where(p > 0, p, 1.0))
    return -(p * logp).sum(-1)


def np_eata(batches, eps, e0):
    """EATA's forward_and_adapt loss and update_model_probs, with boolean indexing and None."""
    m, out = None, []
    for z in batches:
        h = np_entropy(z)
        ids1 = h < e0
        p1 = np_softmax(z[ids1])
        if m is not None:
            cos = p1 @ m / np.maximum(np.linalg.norm(p1, axis=1) * np.linalg.norm(m), 1e-8)
            ids2 = np.abs(cos) < eps
            new = p1[ids2]
            m = m if len(new) == 0 else 0.9 * m + 0.1 * new.mean(0)
        else:
            ids2 = np.ones(ids1.sum(), bool)
            m = None if len(p1) == 0 else p1.mean(0)
        hs = h[ids1][ids2]
        loss = (np.exp(e0 - hs) * hs).mean() if len(hs) else 0.0
        out.append((loss, len(hs), None if m is None else m.copy()))
    return out


def np_recovery(losses_, threshold=0.2):
    """SAR's update_ema and reset rule (NaN = nothing survived)."""
    ema, out = None, []
    for loss in losses_:
        if not np.isnan(loss):
            ema = loss if ema is None else 0.9 * ema + 0.1 * loss
        reset = ema is not None and ema < threshold
        if reset:
            ema = None
        out.append((ema, reset))
    return out


B, C = 16, 5  # one logits shape for most tests: fewer compilations


def logits_batch(b=B, c=C, scale=3.0, seed=None):
    gen = rng if seed is None else np.random.default_rng(seed)
    return jnp.asarray(gen.normal(size=(b, c)) * scale)


def jit(fn, **static):
    return jax.jit(lambda *a: fn(*a, **static))


# ---------------------------------------------------------------- margins, filters, weights


def test_entropy_margin_defaults_from_the_sheet():
    assert losses.entropy_margin(1000) == pytest.approx(2.763, abs=5e-4)
    assert losses.entropy_margin(10) == pytest.approx(0.921, abs=5e-4)
    assert losses.entropy_margin(2) == pytest.approx(0.277, abs=5e-4)
    assert losses.entropy_margin(1000, 0.5) == 0.5 * math.log(1000)
    # The EATA class default ln(1000)/2 - 1 = 2.454 is not the command-line default we use.
    assert abs(losses.entropy_margin(1000) - (math.log(1000) / 2 - 1)) > 0.3


def test_reliable_mask_is_strict_and_weights_match_the_oracle():
    e0 = 0.5
    h = jnp.array([0.0, 0.49, e0, 0.51, jnp.nan])
    where = jnp.array([False, True, True, True, True])
    mask = jit(losses.reliable_mask, e0=e0)
    np.testing.assert_array_equal(mask(h), [True, True, False, False, False])
    np.testing.assert_array_equal(
        jit(losses.reliable_mask, e0=e0, where=where)(h), [False, True, False, False, False]
    )
    z = logits_batch(64, 10)
    e0 = losses.entropy_margin(10)
    h = jax.jit(entreg.entropy)(z)
    weight = jit(losses.entropy_weight, e0=e0)
    w = weight(h)
    np.testing.assert_allclose(w, np.exp(e0 - np_entropy(z)), rtol=RTOL)
    sel = np.asarray(h) < e0
    assert 0 < sel.sum() < 64
    assert np.all(w[sel] > 1.0) and np.all(w[sel] <= 10**0.4 * (1 + 1e-12))
    g = jax.jit(jax.grad(lambda h: weight(h).sum()))(h)
    np.testing.assert_array_equal(g, 0.0)


def test_redundancy_filter_oracle_and_one_hot_vs_uniform():
    for c, kept in ((1000, True), (10, False)):
        one_hot = np.zeros((1, c))
        one_hot[0, 0] = 1.0
        uniform = np.full(c, 1.0 / c)
        assert one_hot[0] @ uniform / np.linalg.norm(uniform) == pytest.approx(c**-0.5, rel=1e-12)
        assert bool(losses.nonredundant_mask(one_hot, uniform, 0.05)[0]) is kept
    p = np_softmax(rng.normal(size=(B, C)) * 2)
    m = np_softmax(rng.normal(size=C))
    cos = p @ m / (np.linalg.norm(p, axis=1) * np.linalg.norm(m))
    got = jit(losses.nonredundant_mask, eps=0.8)(p, m)
    np.testing.assert_array_equal(got, cos < 0.8)
    assert 0 < got.sum() < B


# ------------------------------------------------------------------------------------- EATA


def test_eata_matches_reference_over_a_stream():
    eps, e0 = 0.9, losses.entropy_margin(C)
    batches = [np.array(logits_batch(scale=s)) for s in (3.0, 0.01, 3.0, 3.0, 5.0)]
    batches[2][:] = 0.0  # uniform rows: nothing reliable, m and the state stay put
    expected = np_eata(batches, eps, e0)
    assert [n for _, n, _ in expected[:3]][1:] == [0, 0] and 0 < expected[3][1] < B
    state = losses.eata_init(C)
    loss_fn, update = jit(losses.eata_loss, eps=eps), jax.jit(losses.eata_update)
    for z, (loss, count, m) in zip(batches, expected, strict=True):
        value, metrics = loss_fn(z, state)
        np.testing.assert_allclose(value, loss, rtol=RTOL, atol=1e-15)
        assert int(metrics["num_selected"]) == count
        state = update(state, z, metrics["selected"])
        assert bool(state.initialised) is (m is not None)
        if m is not None:
            np.testing.assert_allclose(state.probs, m, rtol=1e-6)  # m is kept in float32
    # A first batch of identical confident rows: all selected (no m yet); then all redundant.
    z = np.zeros((B, C))
    z[:, 0] = 20.0
    _, first = loss_fn(z, losses.eata_init(C))
    assert int(first["num_selected"]) == B
    _, second = loss_fn(z, update(losses.eata_init(C), z, first["selected"]))
    assert int(second["num_selected"]) == 0


def test_eata_gradient_oracle():
    """d/dz of mean_S w H with w constant: w_i / |S| * (-p_i (log p_i + H_i)) on S."""
    e0 = 1.2
    z = logits_batch()
    fn = jit(losses.eata_loss, eps=1.0, e0=e0)
    grad = jax.jit(jax.grad(lambda z: fn(z, losses.eata_init(C))[0]))(z)
    zn = np.asarray(z)
    h, p = np_entropy(zn), np_softmax(zn)
    sel = h < e0
    assert 0 < sel.sum() < B
    w = np.exp(e0 - h)
    expected = np.where(sel[:, None], (w / sel.sum())[:, None] * -p * (np.log(p) + h[:, None]), 0)
    np.testing.assert_allclose(grad, expected, rtol=1e-10, atol=1e-15)


def _nothing_passes(z, where):
    """Every loss with a filter, on a batch where nothing passes it."""
    e0 = 1e-3
    return {
        "eata": losses.eata_loss(z, losses.eata_init(C), eps=0.4, e0=e0, where=where),
        "sar": losses.sar_loss(z, e0=e0, where=where),
        "deyo": losses.deyo_loss(z, z, where=where),  # PLPD = 0 < tau_plpd
        "open_set": losses.open_set_loss(z, z.at[:, 0].add(5.0), where=where),
    }


def test_fully_filtered_batches_give_zero_loss_and_zero_gradient():
    z = jnp.asarray(rng.normal(size=(B, C)) * 0.1).at[-1].set(jnp.nan)  # a NaN padding row
    where = jnp.arange(B) < B - 1
    out = jax.jit(_nothing_passes)(z, where)
    grads = jax.jit(jax.jacrev(lambda z: {k: v[0] for k, v in _nothing_passes(z, where).items()}))(
        z
    )
    for name, (loss, metrics) in out.items():
        assert float(loss) == 0.0 and int(metrics["num_selected"]) == 0, name
        np.testing.assert_array_equal(grads[name], 0.0, err_msg=name)


def test_padding_rows_never_leak():
    z, t = logits_batch(), logits_batch()
    where = jnp.arange(B) < B - 2
    garbage = z.at[-2:].set(jnp.nan)

    def fns(z):
        return (
            losses.tent_loss(z, where=where)[0],
            losses.information_maximization(z, where=where),
            losses.symmetric_cross_entropy(z, t, where=where).sum(),
        )

    np.testing.assert_allclose(jax.jit(fns)(garbage), jax.jit(fns)(z), rtol=RTOL)
    for g in jax.jit(jax.jacrev(fns))(garbage):
        assert np.isfinite(g).all() and np.all(g[-2:] == 0.0)


# -------------------------------------------------------------------------------------- SAR


def test_sar_loss_oracle():
    z = logits_batch(scale=1.5, seed=8)
    h = np_entropy(np.asarray(z))
    first = h < losses.entropy_margin(C)
    assert 0 < first.sum() < B
    loss_fn = jax.jit(lambda z, w: losses.sar_loss(z, where=w))
    np.testing.assert_allclose(loss_fn(z, None)[0], h[first].mean(), rtol=RTOL)
    where = first & (np.arange(B) % 2 == 0)
    np.testing.assert_allclose(loss_fn(z, jnp.asarray(where))[0], h[where].mean(), rtol=RTOL)


def test_recovery_matches_reference():
    seq = [0.25, np.nan, 0.3, 0.1, 0.05, 0.02, 0.01, np.nan, 0.4, 0.1, 0.15]
    expected = np_recovery(seq)
    assert [r for _, r in expected].count(True) == 1
    state = losses.recovery_init()
    update = jax.jit(losses.recovery_update)
    for loss, (ema, reset) in zip(seq, expected, strict=True):
        valid = not np.isnan(loss)
        state, fired = update(state, jnp.float32(loss if valid else 0.0), jnp.bool_(valid))
        assert bool(fired) is reset
        assert bool(state.initialised) is (ema is not None)
        if ema is not None:
            np.testing.assert_allclose(state.ema, ema, rtol=1e-6)


def test_sharpness_aware_perturbation_has_norm_rho():
    rho = 0.05
    opt = adaptation.sharpness_aware(optax.sgd(0.0), rho)
    params = {"a": jnp.ones(3), "b": jnp.ones((2, 2))}
    state = opt.init(params)
    update = jax.jit(opt.update)
    g = {"a": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array([[3.0, 0.0], [0.0, -1.0]])}
    eps, _ = update(g, state, params)
    np.testing.assert_allclose(optax.tree.norm(eps), rho, rtol=1e-12)
    gnorm = float(optax.tree.norm(g))
    np.testing.assert_allclose(eps["a"], rho * g["a"] / (gnorm + 1e-12), rtol=1e-12)
    eps0, _ = update(jax.tree.map(jnp.zeros_like, g), state, params)
    chex.assert_trees_all_equal(eps0, jax.tree.map(jnp.zeros_like, g))


# ------------------------------------------------------------------------------------- DeYO


def test_plpd_and_deyo_loss_oracle_with_switches():
    z, zd = logits_batch(scale=1.5, seed=8), logits_batch(scale=1.5, seed=108)
    h = np_entropy(np.asarray(z))
    p, pd = np_softmax(np.asarray(z)), np_softmax(np.asarray(zd))
    yhat = p.argmax(-1)
    d = p[np.arange(B), yhat] - pd[np.arange(B), yhat]
    got = jax.jit(losses.plpd)(z, zd)
    np.testing.assert_allclose(got, d, rtol=RTOL)
    assert np.all(np.abs(got) <= 1.0)
    np.testing.assert_array_equal(jax.jit(losses.plpd)(z, z), 0.0)
    tau_ent, e0 = 0.5 * math.log(C), 0.4 * math.log(C)
    keep1 = h < tau_ent
    keep = keep1 & (d > 0.2)
    assert 0 < keep.sum() < keep1.sum()
    weights = {
        (True, True): np.exp(e0 - h) + np.exp(d),
        (True, False): np.exp(e0 - h),
        (False, True): np.exp(d),
        (False, False): np.ones_like(h),
    }
    for (ent, pl), w in weights.items():
        fn = jit(losses.deyo_loss, reweight_ent=ent, reweight_plpd=pl)
        loss, metrics = fn(z, zd)
        np.testing.assert_allclose(loss, (w * h)[keep].mean(), rtol=RTOL)
        assert int(metrics["num_selected"]) == keep.sum()
        assert int(metrics["num_reliable"]) == keep1.sum()


def test_patch_shuffle_permutes_patches_per_image():
    x = jnp.asarray(rng.normal(size=(3, 8, 8, 2)))
    shuffle = jax.jit(lambda k, x: losses.patch_shuffle(k, x, grid=4))
    key = jax.random.key(0)
    y = shuffle(key, x)
    np.testing.assert_array_equal(shuffle(key, x), y)  # reproducible from the key
    np.testing.assert_array_equal(losses.patch_shuffle(key, x, grid=1), x)  # identity

    def patches(a):
        a = np.asarray(a).reshape(3, 4, 2, 4, 2, 2).transpose(0, 1, 3, 2, 4, 5)
        return a.reshape(3, 16, -1)

    px, py = patches(x), patches(y)
    perms = []
    for b in range(3):
        match = [int(np.flatnonzero((px[b] == q).all(axis=1))[0]) for q in py[b]]
        assert sorted(match) == list(range(16))
        perms.append(match)
    assert perms[0] != perms[1] and perms[0] != list(range(16))  # one permutation per image
    odd = losses.patch_shuffle(key, jnp.ones((2, 9, 9, 1)), grid=4)  # resized to 8 and back
    assert odd.shape == (2, 9, 9, 1)
    np.testing.assert_allclose(odd, 1.0, rtol=1e-6)


# ------------------------------------------------------------------ open set, SCE, IM


def test_open_set_filter_and_loss_oracle():
    z, zo = logits_batch(), logits_batch()
    pa, po = np_softmax(np.asarray(z)), np_softmax(np.asarray(zo))
    c = po.argmax(-1)
    keep = pa[np.arange(B), c] >= po[np.arange(B), c]
    assert 0 < keep.sum() < B
    mask = jax.jit(losses.confidence_drop_mask)
    np.testing.assert_array_equal(mask(z, zo), keep)
    assert bool(jnp.all(mask(z, z)))  # ties are kept
    h = np_entropy(np.asarray(z))
    pbar = pa.mean(0)
    loss = jit(losses.open_set_loss)(z, zo)[0]
    np.testing.assert_allclose(loss, h[keep].mean() + 0.5 * (pbar * np.log(pbar)).sum(), rtol=RTOL)
    plain = jit(losses.open_set_loss, diversity=0.0)(z, zo)[0]
    np.testing.assert_allclose(plain, h[keep].mean(), rtol=RTOL)


def test_symmetric_cross_entropy_oracle_symmetry_and_stop_gradient():
    s, t = logits_batch(), logits_batch()
    ps, pt = np_softmax(np.asarray(s)), np_softmax(np.asarray(t))
    sce = jax.jit(lambda s, t, a: losses.symmetric_cross_entropy(s, t, alpha=a), static_argnums=2)
    for a in (0.0, 0.3, 0.5):
        expected = -(1 - a) * (pt * np.log(ps)).sum(-1) - a * (ps * np.log(pt)).sum(-1)
        np.testing.assert_allclose(sce(s, t, a), expected, rtol=RTOL)
    np.testing.assert_allclose(sce(s, t, 0.5), sce(t, s, 0.5), rtol=RTOL)
    np.testing.assert_allclose(sce(s, s, 0.3), np_entropy(np.asarray(s)), rtol=RTOL)
    g_teacher = jax.jit(jax.grad(lambda t: sce(s, t, 0.5).sum()))(t)
    np.testing.assert_array_equal(g_teacher, 0.0)
    # The student gets gradient through softmax(s) in the second term: -sum_c s_c log t_c.
    g_second = jax.jit(jax.grad(lambda s: sce(s, t, 1.0).sum()))(s)
    log_t = np.log(pt)
    expected = -ps * (log_t - (ps * log_t).sum(-1, keepdims=True))
    np.testing.assert_allclose(g_second, expected, rtol=1e-10, atol=1e-15)


def test_information_maximization_oracle_and_bounds():
    z = logits_batch()
    p = np_softmax(np.asarray(z))
    pbar = p.mean(0)
    h_mean = np_entropy(np.asarray(z)).mean()
    im = jax.jit(lambda z, prior: losses.information_maximization(z, prior=prior))
    value = im(z, None)
    np.testing.assert_allclose(value, h_mean + (pbar * np.log(pbar)).sum(), rtol=RTOL)
    assert -math.log(C) <= float(value) <= 0.0
    one_hot = jnp.tile(50.0 * jnp.eye(C), (B // C + 1, 1))[:C]  # B = C distinct one-hot rows
    np.testing.assert_allclose(im(one_hot, None), -math.log(C), atol=1e-15)
    same = jnp.tile(z[:1], (B, 1))
    np.testing.assert_allclose(im(same, None), 0.0, atol=1e-14)
    prior = np.array([0.4, 0.3, 0.1, 0.1, 0.1])
    expected = h_mean + (pbar * np.log(pbar / prior)).sum()
    np.testing.assert_allclose(im(z, prior), expected, rtol=RTOL)
    uniform = np.full(C, 1.0 / C)  # KL(pbar || u) = ln C - H(pbar)
    np.testing.assert_allclose(im(z, uniform), value + math.log(C), rtol=RTOL)
    # A class excluded in every row (-inf): the IM of the other classes, finite gradients.
    excluded = z.at[:, 0].set(-jnp.inf)
    rest = np.asarray(z[:, 1:])
    pr = np_softmax(rest)
    expected = np_entropy(rest).mean() + (pr.mean(0) * np.log(pr.mean(0))).sum()
    np.testing.assert_allclose(im(excluded, None), expected, rtol=RTOL)
    g = jax.jit(jax.grad(lambda z: im(z, None)))(excluded)
    assert np.isfinite(g).all() and np.all(g[:, 0] == 0.0)


# ----------------------------------------------------------------------------------- Fisher


def test_fisher_diagonal_and_penalty_oracle():
    params = {"w": jnp.array([0.5, -1.0, 2.0]), "b": jnp.array(0.3)}
    xs = jnp.asarray(rng.normal(size=(4, 8, 3)))

    def grad_fn(p, x):  # batch-mean gradient of a quadratic loss
        return jax.grad(lambda p: jnp.mean((x @ p["w"] + p["b"]) ** 2))(p)

    state = jax.jit(lambda p, xs: losses.fisher_diagonal(grad_fn, p, xs))(params, xs)
    w, b = np.asarray(params["w"]), float(params["b"])
    grads = [(2 * ((x @ w + b)[:, None] * x).mean(0), 2 * (x @ w + b).mean()) for x in xs]
    fw, fb = np.mean([g[0] ** 2 for g in grads], 0), np.mean([g[1] ** 2 for g in grads])
    np.testing.assert_allclose(state.fisher["w"], fw, rtol=1e-12)
    np.testing.assert_allclose(state.fisher["b"], fb, rtol=1e-12)
    chex.assert_trees_all_equal(state.anchor, params)
    moved = {"w": params["w"] + 0.1, "b": params["b"] - 0.2}
    penalty = jax.jit(lambda p: losses.fisher_penalty(p, state, alpha=2000.0))
    expected = 2000.0 * ((fw * 0.01).sum() + fb * 0.04)
    np.testing.assert_allclose(penalty(moved), expected, rtol=1e-12)
    g = jax.jit(jax.grad(penalty))(moved)
    np.testing.assert_allclose(g["w"], 2000.0 * 2 * fw * 0.1, rtol=1e-12)


# ------------------------------------------------------------------- jit / vmap, bad input


def test_vmap_equals_per_batch_calls():
    zs = jnp.asarray(rng.normal(size=(3, B, C)) * 3)
    state = losses.eata_init(C)

    def fn(z, zd):
        return (
            losses.eata_loss(z, state, eps=0.5)[0],
            losses.deyo_loss(z, zd)[0],
            losses.information_maximization(z),
            losses.symmetric_cross_entropy(z, zd),
        )

    batched = jax.jit(jax.vmap(fn))(zs, zs[::-1])
    single = jax.jit(fn)
    for i in range(3):
        for got, want in zip(batched, single(zs[i], zs[2 - i]), strict=True):
            np.testing.assert_allclose(got[i], want, rtol=RTOL)


@pytest.mark.parametrize(
    ("call", "error", "argument"),
    [
        (lambda: losses.tent_loss(jnp.zeros((4, 3)), where=jnp.ones(3, bool)), ValueError, "where"),
        (lambda: losses.tent_loss(jnp.zeros((4, 3)), where=jnp.ones(4)), TypeError, "where"),
        (lambda: losses.reliable_mask(jnp.zeros(4), 0.0), ValueError, "e0"),
        (lambda: losses.reliable_mask(jnp.zeros(4), -1.0), ValueError, "e0"),
        (
            lambda: losses.eata_loss(jnp.zeros((4, 3)), losses.eata_init(3), eps=0.4, e0=0.0),
            ValueError,
            "e0",
        ),
        (
            lambda: losses.deyo_loss(jnp.zeros((4, 3)), jnp.zeros((4, 2))),
            ValueError,
            "destroyed_logits",
        ),
        (lambda: losses.sar_loss(jnp.zeros(3)), ValueError, "logits"),
        (
            lambda: losses.eata_loss(jnp.zeros((4, 3)), losses.eata_init(5), eps=0.4),
            ValueError,
            "state",
        ),
    ],
)
def test_bad_input_raises(call, error, argument):
    with pytest.raises(error, match=f"`{argument}`"):
        call()


# ------------------------------------------------------------------------------ the loop

LOOP_RTOL = 1e-5  # float32 model: the loop and the hand-written reference fuse differently


@pytest.fixture(scope="module")
def net():
    model = Net(nnx.Rngs(0))
    model.eval()
    return model


def images(seed, b=8):
    # float32 like the model's parameters (BatchNorm would write float64 statistics into its
    # float32 variables).
    return jnp.asarray(np.random.default_rng(seed).normal(size=(b, 4, 4, 1)), jnp.float32)


def source(net):
    """The source model configured for adaptation, split into (graphdef, norm params, rest)."""
    model = nnx.clone(net)
    model.train()
    return nnx.as_pure(nnx.split(model, adaptation.norm_params(model), ...))


def forward(net, x):
    return _apply(*source(net), x)


@jax.jit(static_argnums=0)
def _apply(graphdef, params, rest, x):
    return nnx.merge(graphdef, params, rest)(x)


def flat(state):
    return {"/".join(map(str, k)): np.asarray(v) for k, v in nnx.to_flat_state(state)}


def test_norm_params_selects_norm_affine_only(net):
    _, params, _ = nnx.split(net, adaptation.norm_params(net), ...)
    assert sorted(flat(params)) == ["bn/bias", "bn/scale", "ln/bias", "ln/scale"]
    only_bn = adaptation.norm_params(net, exclude=lambda path: path == ("ln",))
    assert sorted(flat(nnx.split(net, only_bn, ...)[1])) == ["bn/bias", "bn/scale"]
    with pytest.raises(ValueError, match="`model`"):
        adaptation.norm_params(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
    method = adaptation.Method((losses.tent_term(),), optax.sgd(0.1), wrt=nnx.BatchStat)
    with pytest.raises(ValueError, match="`wrt`"):
        adaptation.Adapter(net, method)


def test_tent_step_moves_only_the_norm_affine_parameters(net):
    """Also: the prediction is the pre-update forward, the step equals a hand-written
    nnx.Optimizer(wrt=...) step, episodic mode resets before every batch, run() equals steps and
    reset() restores the model and the optimizer."""
    ad = adaptation.Adapter(net, adaptation.tent(optax.adam(1e-2), episodic=True))
    state = ad.init()
    xs = jnp.stack([images(1), images(2)])
    new, logits, metrics = ad.step(state, xs[0])
    before, after = flat(state.params), flat(new.params)
    assert all(np.any(before[k] != after[k]) for k in before)
    rest0, rest1 = flat(state.rest), flat(new.rest)
    frozen = [k for k in rest0 if not k.endswith(("mean", "var"))]
    assert len(frozen) == 6 and all(np.array_equal(rest0[k], rest1[k]) for k in frozen)
    # BatchNorm's running average moves as a side effect (never used).
    assert not np.array_equal(rest0["bn/mean"], rest1["bn/mean"])
    # The prediction is the pre-update forward with test-batch statistics.
    np.testing.assert_allclose(logits, forward(net, xs[0]), rtol=LOOP_RTOL)
    np.testing.assert_allclose(
        metrics["tent/value"], np_entropy(np.asarray(logits, np.float64)).mean(), rtol=LOOP_RTOL
    )
    # The same step written with nnx.Optimizer(wrt=...) and a DiffState gradient.
    model = nnx.clone(net)
    model.train()
    wrt = adaptation.norm_params(model)
    opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=wrt)

    @nnx.jit
    def manual_step(model, opt, x):
        loss = lambda m: entreg.entropy(m(x)).mean()  # noqa: E731
        opt.update(model, nnx.grad(loss, argnums=nnx.DiffState(0, wrt))(model))

    manual_step(model, opt, xs[0])
    manual = flat(nnx.state(model, wrt))
    for k in after:
        np.testing.assert_allclose(after[k], manual[k], rtol=LOOP_RTOL, atol=1e-7)
    # Episodic: the second batch starts from the source model and a fresh optimizer.
    second, logits2, _ = ad.step(new, xs[1])
    fresh, logits2_fresh, _ = ad.step(state, xs[1])
    chex.assert_trees_all_equal(
        (second.params, second.opt_state, logits2), (fresh.params, fresh.opt_state, logits2_fresh)
    )
    final, stacked, _ = ad.run(state, xs)
    np.testing.assert_allclose(stacked, jnp.stack([logits, logits2]), rtol=LOOP_RTOL)
    chex.assert_trees_all_close(final.params, second.params, rtol=LOOP_RTOL)
    reset = ad.reset(second)
    chex.assert_trees_all_equal((reset.params, reset.opt_state), (state.params, state.opt_state))
    assert int(reset.steps) == 2


def test_eata_skips_a_fully_filtered_batch(net):
    """Nothing selected: no step at all, although the Fisher anchor (theta0 = source - 0.5, so
    the penalty alpha * sum F (theta - theta0)^2 = 2 * 0.25 * #elements has a gradient) is part
    of the loss."""
    params = nnx.split(net, adaptation.norm_params(net), ...)[1]
    anchor = jax.tree.map(lambda p: p - 0.5, nnx.as_pure(params))
    fisher = losses.FisherState(jax.tree.map(jnp.ones_like, anchor), anchor)
    method = adaptation.eata(optax.adam(1e-2), 4, eps=0.4, e0=1e-6, fisher=fisher, fisher_alpha=2.0)
    ad = adaptation.Adapter(net, method)
    state = ad.init()
    new, _, metrics = ad.step(state, images(5))
    assert not bool(metrics["adapt/updated"]) and int(metrics["eata/num_selected"]) == 0
    size = sum(x.size for x in jax.tree.leaves(anchor))
    np.testing.assert_allclose(metrics["fisher/loss"], 2.0 * 0.25 * size, rtol=1e-6)
    # Parameters, Adam's state (its count included) and m are untouched.
    chex.assert_trees_all_equal(
        (state.params, state.opt_state, state.terms), (new.params, new.opt_state, new.terms)
    )


def test_sar_step_matches_hand_written_sam_and_recovery_resets(net):
    lr, rho = 0.5, 0.05
    x = images(6)
    h = np_entropy(np.asarray(forward(net, x), np.float64))
    e0 = float(np.sort(h)[5])  # five rows pass the first filter
    method = adaptation.sar(optax.sgd(lr), rho=rho, e0=e0, reset_threshold=100.0)
    ad = adaptation.Adapter(net, method)
    state = ad.init()
    new, _, metrics = ad.step(state, x)
    first = np.asarray(metrics["sar/selected"])
    np.testing.assert_array_equal(first, h < e0)

    graphdef, params, rest = source(net)

    def entropies(p):
        return entreg.entropy(nnx.merge(graphdef, p, rest)(x))

    def loss(p, rows):
        h = entropies(p)
        keep = rows & (h < e0)
        return jnp.sum(jnp.where(keep, h, 0.0)) / jnp.sum(keep)

    grad = jax.jit(jax.grad(loss))
    g1 = grad(params, jnp.ones(8, bool))
    n1 = optax.tree.norm(g1)
    perturbed = jax.tree.map(lambda p, g: p + rho * g / (n1 + 1e-12), params, g1)
    g2 = grad(perturbed, jnp.asarray(first))
    expected = flat(jax.tree.map(lambda p, g: p - lr * g, params, g2))
    # With a threshold of 100 the first EMA value triggers the recovery: model (BatchNorm
    # statistics included) and optimizer are restored and the EMA is cleared.
    assert bool(metrics["adapt/reset"]) and int(new.steps) == 1
    chex.assert_trees_all_equal(
        (new.params, new.rest, new.opt_state), (state.params, state.rest, state.opt_state)
    )
    assert not bool(new.recovery.initialised)
    no_reset = adaptation.Adapter(
        net, adaptation.sar(optax.sgd(lr), rho=rho, e0=e0, reset_threshold=None)
    )
    got = flat(no_reset.step(no_reset.init(), x)[0].params)
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=LOOP_RTOL, atol=1e-7)


def test_deyo_identity_transform_and_subset_statistics(net):
    x = images(7)
    key = jax.random.key(0)
    deyo = adaptation.deyo(optax.sgd(0.1))

    def identity(tau):  # DeYO with x' = x
        term = losses.deyo_term(tau_ent=tau)
        return adaptation.Method(
            (term,), optax.sgd(0.1), skip_empty=True, destroy=lambda k, x: x, tau_ent=tau
        )

    # Every row passing filter 1: PLPD = 0 exactly, so nothing passes PLPD > 0.2.
    ad = adaptation.Adapter(net, identity(10.0))
    _, _, m = ad.step(ad.init(), x, key)
    assert float(m["deyo/plpd"]) == 0.0 and int(m["deyo/num_reliable"]) == 8
    assert int(m["deyo/num_selected"]) == 0 and not bool(m["adapt/updated"])
    # Some rows failing filter 1: x' is normalized with the statistics of the others, so the
    # PLPD of the kept rows is not 0 for a BatchNorm model (as in DeYO's code).
    tau = float(np.median(np_entropy(np.asarray(forward(net, x), np.float64))))
    ad = adaptation.Adapter(net, identity(tau))
    _, _, m = ad.step(ad.init(), x, key)
    assert int(m["deyo/num_reliable"]) == 4 and abs(float(m["deyo/plpd"])) > 1e-4
    with pytest.raises(ValueError, match="`key`"):
        adaptation.Adapter(net, deyo).step(ad.init(), x)


def test_cotta_anchor_branch_frozen_teacher_and_stochastic_restore(net):
    shift = lambda key, x: x + 1.0  # noqa: E731
    # Two batches the source model is more and less sure of; p_th between them.
    x_sure, x_unsure = images(10), images(14)
    conf = [
        float(jnp.mean(jnp.max(jax.nn.softmax(forward(net, x)), -1))) for x in (x_sure, x_unsure)
    ]
    assert conf[0] > conf[1]
    # a = 1 freezes the teacher; every student element returns to its source value with p.
    method = adaptation.cotta(
        optax.adam(1e-2),
        augment=shift,
        anchor_threshold=sum(conf) / 2,
        momentum=1.0,
        restore_prob=0.5,
        num_views=3,
    )
    ad = adaptation.Adapter(net, method)
    state = ad.init()
    new, pred, _ = ad.step(state, x_sure, jax.random.key(1))
    chex.assert_trees_all_equal(state.teacher, new.teacher)
    np.testing.assert_allclose(pred, forward(net, x_sure), rtol=LOOP_RTOL)  # plain teacher
    new, pred, _ = ad.step(state, x_unsure, jax.random.key(1))
    # The anchor is unsure: the teacher's logits averaged over the (identical) augmented views.
    np.testing.assert_allclose(pred, forward(net, x_unsure + 1.0), rtol=LOOP_RTOL)
    # Stochastic restore: about half of the elements are back at the source, reproducibly. (On
    # the sure batch the student's gradient is exactly 0, its target being its own prediction:
    # only the unsure batch's averaged target moves the student.)
    restored = [
        np.asarray(a == b)
        for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params), strict=True)
    ]
    fraction = np.concatenate([r.ravel() for r in restored]).mean()
    assert 0.4 < fraction < 0.6  # 276 elements: 3.3 standard deviations
    again, _, _ = ad.step(state, x_unsure, jax.random.key(1))
    other, _, _ = ad.step(state, x_unsure, jax.random.key(2))
    chex.assert_trees_all_equal(again.params, new.params)
    assert any(
        not np.array_equal(u, v)
        for u, v in zip(jax.tree.leaves(other.params), jax.tree.leaves(new.params), strict=True)
    )


def test_rmt_ensemble_prediction_and_symmetric_loss_on_two_views(net):
    """RMT with a frozen teacher (a = 1): the prediction is student + teacher logits before the
    update, the loss 1/2 SCE(s(x), t(x)) + 1/2 SCE(s(aug x), t(x)) at a = 0.5, and every
    parameter (not only the norm layers) trains."""
    x = images(15)
    method = adaptation.rmt(optax.sgd(0.1), augment=lambda key, x: x + 1.0, momentum=1.0)
    ad = adaptation.Adapter(net, method)
    state = ad.init()
    new, pred, metrics = ad.step(state, x, jax.random.key(0))
    z, za = (np.asarray(forward(net, v), np.float64) for v in (x, x + 1.0))
    np.testing.assert_allclose(pred, 2.0 * z, rtol=LOOP_RTOL, atol=1e-6)
    p, pa = np_softmax(z), np_softmax(za)
    sce_aug = -0.5 * (p * np.log(pa)).sum(-1) - 0.5 * (pa * np.log(p)).sum(-1)
    expected = (0.5 * np_entropy(z) + 0.5 * sce_aug).mean()
    np.testing.assert_allclose(metrics["teacher/value"], expected, rtol=LOOP_RTOL)
    chex.assert_trees_all_equal(new.teacher, state.teacher)
    before, after = flat(state.params), flat(new.params)
    assert {"dense/kernel", "head/kernel", "bn/scale"} <= set(before)
    assert all(np.any(before[k] != after[k]) for k in before)


def test_open_set_first_step_keeps_every_sample(net):
    ad = adaptation.Adapter(net, adaptation.open_set(optax.sgd(0.1)))
    _, _, m = ad.step(ad.init(), images(11))
    assert int(m["open_set/num_selected"]) == 8


def test_estimate_fisher_matches_hand_written(net):
    xs = jnp.stack([images(12), images(13)])
    state = adaptation.estimate_fisher(net, xs)
    graphdef, params, rest = source(net)

    def grad(x):
        def loss(p):
            z = nnx.merge(graphdef, p, rest)(x)
            y = jnp.argmax(z, -1)
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), y[:, None], -1))

        return jax.grad(loss)(params)

    grad = jax.jit(grad)
    g = [flat(grad(x)) for x in xs]
    got = flat(state.fisher)
    for k in got:
        np.testing.assert_allclose(got[k], (g[0][k] ** 2 + g[1][k] ** 2) / 2, rtol=LOOP_RTOL)
    chex.assert_trees_all_equal(state.anchor, params)
