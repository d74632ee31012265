"""RL policy losses against loop-based float64 oracles, plus their selection rules and gradients."""

import functools

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.sharding import NamedSharding, PartitionSpec
from jax.test_util import check_grads

import entreg
from entreg import losses
from tests import oracles
from tests import policy_oracles as po

SHAPE = (3, 7)
floats = st.floats(-6, 0, width=64, allow_subnormal=False)


@st.composite
def batches(draw, shape=SHAPE, spread=3.0):
    lp = draw(
        hnp.arrays(np.float64, shape, elements=st.floats(-8, 0, width=64, allow_subnormal=False))
    )
    delta = draw(
        hnp.arrays(
            np.float64, shape, elements=st.floats(-spread, spread, width=64, allow_subnormal=False)
        )
    )
    adv = draw(
        hnp.arrays(
            np.float64,
            shape[:-1] + (1,),
            elements=st.floats(-3, 3, width=64, allow_subnormal=False),
        )
    )
    mask = draw(hnp.arrays(np.bool_, shape))
    return lp, lp - delta, np.broadcast_to(adv, shape).copy(), mask


def random_batch(seed, shape=(6, 40), spread=0.3):
    rng = np.random.default_rng(seed)
    lp = np.log(rng.uniform(0.01, 1.0, shape))
    olp = lp + rng.normal(0, spread, shape)
    adv = np.repeat(rng.normal(size=shape[:-1] + (1,)), shape[-1], -1)
    lengths = rng.integers(shape[-1] // 3, shape[-1] + 1, shape[:-1])
    mask = np.arange(shape[-1]) < lengths[..., None]
    return lp, olp, adv, mask


# ----------------------------------------------------------------------------------------- PPO


@given(
    batches(spread=25.0),
    st.sampled_from([0.2, 0.1]),
    st.sampled_from([None, 0.28]),
    st.sampled_from([None, 3.0]),
)
def test_ppo_matches_oracle(batch, eps_low, eps_high, dual_clip):
    lp, olp, adv, mask = batch
    loss, m = losses.ppo_loss(
        lp, olp, adv, mask, eps_low=eps_low, eps_high=eps_high, dual_clip=dual_clip
    )
    want, clipped, dual = po.ppo(lp, olp, adv, mask, eps_low, eps_high, dual_clip)
    np.testing.assert_allclose(loss, want, rtol=1e-12, atol=1e-12)
    n = max(mask.sum(), 1)
    np.testing.assert_allclose(m["clip_fraction"], (clipped & mask).sum() / n, rtol=1e-6)
    if dual_clip is not None:
        np.testing.assert_allclose(m["lower_clip_fraction"], (dual & mask).sum() / n, rtol=1e-6)
    d = np.clip(lp - olp, -20, 20)
    np.testing.assert_allclose(m["ppo_kl"], np.where(mask, -d, 0).sum() / n, rtol=1e-5, atol=1e-7)


def test_ppo_entropy_bonus_and_kl_penalty_are_per_token():
    lp, olp, adv, mask = random_batch(0)
    rng = np.random.default_rng(1)
    h, ref = rng.uniform(0, 3, lp.shape), lp + rng.normal(0, 0.2, lp.shape)
    loss, m = losses.ppo_loss(
        lp, olp, adv, mask, entropy=h, entropy_coef=0.01, ref_log_prob=ref, kl_coef=0.1
    )
    base, _, _ = po.ppo(lp, olp, adv, mask)
    r = np.exp(ref - lp)
    want = np.where(mask, base - 0.01 * h + 0.1 * (r - 1 - np.log(r)), 0.0)
    np.testing.assert_allclose(loss, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m["entropy"], h[mask].mean(), rtol=1e-6)
    with pytest.raises(ValueError, match="entropy"):
        losses.ppo_loss(lp, olp, adv, mask, entropy_coef=0.1)
    with pytest.raises(ValueError, match="ref_log_prob"):
        losses.ppo_loss(lp, olp, adv, mask, kl_coef=0.1)


def test_ppo_weights_get_no_gradient_and_masked_tokens_none():
    lp, olp, adv, mask = random_batch(2)
    w = np.random.default_rng(3).uniform(0.5, 1.5, lp.shape)

    def f(lp, w):
        return entreg.aggregate(losses.ppo_loss(lp, olp, adv, mask, token_weights=w)[0], mask)

    g_lp, g_w = jax.grad(f, argnums=(0, 1))(lp, w)
    assert np.all(g_w == 0)
    assert np.all(g_lp[~mask] == 0)
    check_grads(lambda x: f(x, w), (lp,), order=1, modes=["rev"], eps=1e-6)


def test_ppo_safe_on_extreme_inputs_and_bf16():
    lp = np.array([[-1e4, 0.0, -np.inf, -30.0]])
    olp = np.array([[0.0, -1e4, -1.0, -np.inf]])
    adv = np.array([[1.0, -1.0, 1.0, -1.0]])
    mask = np.array([[1, 1, 0, 1]])
    loss, m = losses.ppo_loss(lp, olp, adv, mask)
    g = jax.grad(lambda x: losses.ppo_loss(x, olp, adv, mask)[0].sum())(lp)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(g))
    assert all(np.isfinite(v) for v in m.values())
    # All padding: zero loss and zero gradient.
    g0 = jax.grad(lambda x: losses.ppo_loss(x, olp, adv, 0 * mask)[0].sum())(lp)
    assert np.all(g0 == 0)
    lp16, olp16, adv16, mask16 = random_batch(4, (2, 8))
    out, _ = losses.ppo_loss(
        jnp.asarray(lp16, jnp.bfloat16), jnp.asarray(olp16, jnp.bfloat16), adv16, mask16
    )
    assert out.dtype == jnp.float32 or out.dtype == jnp.float64


# ---------------------------------------------------------------------------------- covariance


@given(batches())
def test_token_covariance_matches_oracle_and_has_no_gradient(batch):
    lp, _, adv, mask = batch
    np.testing.assert_allclose(
        losses.token_covariance(lp, adv, mask), po.covariance(lp, adv, mask), atol=1e-10
    )
    g = jax.grad(lambda x: losses.token_covariance(x, adv, mask).sum())(lp)
    assert np.all(g == 0)


def test_global_centering_over_8_devices_equals_concatenated_batch():
    lp, olp, adv, mask = random_batch(5, (16, 12))
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    spec = PartitionSpec("data")
    put = functools.partial(jax.device_put, device=NamedSharding(mesh, spec))

    # jit: an eager shard_map dispatches op by op on every device (20x slower here).
    def local(axis_name):
        return jax.jit(
            jax.shard_map(
                lambda lp, adv, mask: losses.token_covariance(lp, adv, mask, axis_name=axis_name),
                mesh=mesh,
                in_specs=(spec, spec, spec),
                out_specs=spec,
            )
        )(put(lp), put(adv), put(mask))

    want = po.covariance(lp, adv, mask)
    np.testing.assert_allclose(local("data"), want, atol=1e-12)
    # Local centering (verl's micro-batch scope) differs: each shard has its own means.
    assert np.abs(np.asarray(local(None)) - want).max() > 1e-3
    # KL-Cov with global centering selects by the global covariances.
    sel = jax.jit(
        jax.shard_map(
            lambda *a: losses.kl_cov_loss(*a, ratio=0.5, axis_name="data")[1]["selected"],
            mesh=mesh,
            in_specs=(spec,) * 4,
            out_specs=spec,
        )
    )(put(lp), put(olp), put(adv), put(mask))
    for s in range(8):
        rows = slice(2 * s, 2 * s + 2)
        cov, valid = want[rows], mask[rows]
        k = max(1, int(0.5 * valid.sum()))
        chosen = np.asarray(sel[rows])
        assert chosen.sum() == k
        assert cov[chosen].min() >= cov[valid & ~chosen].max(initial=-np.inf)


# ------------------------------------------------------------------------------------ Clip-Cov


@pytest.mark.parametrize("seed", range(4))
def test_clip_cov_selection_rules(seed):
    lp, olp, adv, mask = random_batch(seed, spread=0.5)
    lb, ub, ratio = 0.0, 2.0, 0.05
    loss, m = losses.clip_cov_loss(
        lp,
        olp,
        adv,
        mask,
        key=jax.random.key(seed),
        ratio=ratio,
        cov_bounds=(lb, ub),
        eps_low=0.2,
        eps_high=0.28,
    )
    cand = po.clip_cov_candidates(lp, olp, adv, mask, lb, ub, 0.2, 0.28)
    sel = np.asarray(m["selected"])
    n = min(max(int(ratio * mask.sum()), 1), cand.sum())
    assert cand.sum() > n > 1  # the test exercises a real random choice
    assert sel.sum() == n and int(m["num_candidates"]) == cand.sum()
    assert np.all(cand[sel])  # strictly inside the band, not PPO-clipped, valid
    np.testing.assert_allclose(m["selected_fraction"], n / mask.sum(), rtol=1e-6)
    want, _, _ = po.ppo(lp, olp, adv, mask, 0.2, 0.28, dual_clip=None)
    np.testing.assert_allclose(loss, np.where(sel, 0.0, want), rtol=1e-12, atol=1e-12)


def test_clip_cov_chosen_tokens_get_exactly_zero_gradient():
    lp, olp, adv, mask = random_batch(7, spread=0.5)
    kw = dict(key=jax.random.key(0), ratio=0.05, cov_bounds=(0.0, 2.0))

    def total(x):
        return entreg.aggregate(losses.clip_cov_loss(x, olp, adv, mask, **kw)[0], mask)

    sel = np.asarray(losses.clip_cov_loss(lp, olp, adv, mask, **kw)[1]["selected"])
    g = jax.grad(total)(lp)
    assert sel.any() and np.all(g[sel] == 0)
    # Elsewhere the gradient is PPO's (eps = 1 by default), with the selected tokens in the
    # token-mean denominator.
    g_ppo = jax.grad(
        lambda x: entreg.aggregate(
            losses.ppo_loss(x, olp, adv, mask, eps_low=1.0, dual_clip=None)[0], mask
        )
    )(lp)
    np.testing.assert_allclose(g[~sel], g_ppo[~sel], rtol=1e-12)


def test_clip_cov_random_choice_is_keyed_and_uniform():
    lp, olp, adv, mask = random_batch(8, spread=0.5)
    kw = dict(ratio=0.05, cov_bounds=(0.0, 2.0), eps_low=0.2)

    def selected(key):
        return losses.clip_cov_loss(lp, olp, adv, mask, key=key, **kw)[1]["selected"]

    a, b = selected(jax.random.key(1)), selected(jax.random.key(1))
    np.testing.assert_array_equal(a, b)
    keys = jax.random.split(jax.random.key(2), 4000)
    freq = np.asarray(jax.jit(jax.vmap(selected))(keys)).mean(0)
    cand = po.clip_cov_candidates(lp, olp, adv, mask, 0.0, 2.0, 0.2, 0.2)
    n = min(max(int(0.05 * mask.sum()), 1), cand.sum())
    assert np.all(freq[~cand] == 0)
    # Each candidate is chosen with probability n / #candidates (4000 draws: 5 sigma < 0.04).
    np.testing.assert_allclose(freq[cand], n / cand.sum(), atol=0.04)


def test_clip_cov_at_least_one_and_none_without_candidates():
    lp, olp, adv, mask = random_batch(9)
    m = losses.clip_cov_loss(
        lp, olp, adv, mask, key=jax.random.key(0), ratio=0.0, cov_bounds=(-1e9, 1e9)
    )[1]
    assert int(m["selected"].sum()) == 1  # max(int(0 * N), 1)
    m = losses.clip_cov_loss(lp, olp, adv, mask, key=jax.random.key(0), cov_bounds=(1e8, 1e9))[1]
    assert int(m["selected"].sum()) == 0


# -------------------------------------------------------------------------------------- KL-Cov


@given(batches(spread=1.0), st.sampled_from([2e-3, 0.1, 0.3, 1.0]))
def test_kl_cov_selects_top_k_and_never_clips(batch, ratio):
    lp, olp, adv, mask = batch
    loss, m = losses.kl_cov_loss(lp, olp, adv, mask, ratio=ratio, beta=0.7)
    sel = po.kl_cov_selected(lp, adv, mask, ratio)
    np.testing.assert_array_equal(m["selected"], sel)
    if mask.any():
        assert sel.sum() == max(1, int(ratio * mask.sum()))
    d = lp - olp
    want = np.where(mask, -adv * np.exp(d) + 0.7 * np.abs(d) * sel, 0.0)
    np.testing.assert_allclose(loss, want, rtol=1e-12, atol=1e-12)
    # verl logs mean |d| as KL-Cov's ppo_kl (PPO and Clip-Cov log mean -d).
    want_kl = np.abs(d)[mask].mean() if mask.any() else 0.0
    np.testing.assert_allclose(m["ppo_kl"], want_kl, rtol=1e-12, atol=1e-15)


def test_kl_cov_ties_are_deterministic_and_large_ratios_are_not_clipped():
    lp = np.zeros((2, 4))
    adv = np.array([[1.0] * 4, [-1.0] * 4])
    lp[0] = [-1, -1, -2, -3]
    mask = np.ones((2, 4), bool)
    sel = losses.kl_cov_loss(lp, lp, adv, mask, ratio=0.25)[1]["selected"]
    np.testing.assert_array_equal(sel, po.kl_cov_selected(lp, adv, mask, 0.25))
    olp = lp - 3.0  # rho = e^3, far outside any PPO clip range
    g = jax.grad(lambda x: losses.kl_cov_loss(x, olp, adv, mask, ratio=1e-3)[0].sum())(lp)
    d_sel = np.asarray(sel)
    np.testing.assert_allclose(np.asarray(g)[~d_sel], (-adv * np.exp(3.0))[~d_sel], rtol=1e-12)


def test_kl_cov_penalty_gradient_is_zero_on_policy():
    lp, _, adv, mask = random_batch(10)

    def f(x):
        return losses.kl_cov_loss(x, jax.lax.stop_gradient(x), adv, mask, ratio=0.2)[0].sum()

    # On-policy d = 0: sign(0) = 0, so only the surrogate -A exp(d) contributes (as PyTorch).
    np.testing.assert_allclose(jax.grad(f)(lp), np.where(mask, -adv, 0.0), rtol=1e-12)


def _near_integer_counts(ratio: float, limit: int, most: int = 8192) -> np.ndarray:
    """N <= limit whose ratio * N lies within 1e-6 of an integer: where a float32 product, or
    rounding, can move the floor (elsewhere it is linear in N). At most `most` of them, the
    largest ones first (float32's spacing grows with N)."""
    n = np.arange(limit + 1, dtype=np.float64)
    x = ratio * n
    return n[np.abs(x - np.round(x)) < 1e-6][-most:].astype(np.int64)


@pytest.mark.parametrize("ratio", [0.29, 2e-4, 2e-3, 0.1, 1 / 3, 1.0])
def test_selection_count_is_pythons_int_for_every_dtype(ratio):
    from entreg.losses import _tokens

    rng = np.random.default_rng(0)
    ns = np.unique(
        np.concatenate(
            [
                np.arange(4097),
                _near_integer_counts(ratio, 2**24),
                rng.integers(0, 2**24 + 1, 4096),
                [2**24],
            ]
        )
    )
    got = np.asarray(jax.jit(jax.vmap(lambda n: _tokens.selection_count(ratio, n)))(ns))
    want = np.array([max(int(ratio * int(n)), 1) for n in ns])
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32, jnp.bfloat16])
def test_kl_cov_and_clip_cov_counts_match_python_in_every_dtype(dtype):
    """N = 100, ratio = 0.29: Python's int(0.29 * 100) is 28 (a float32 product gives 29)."""
    n = 100
    lp = jnp.asarray(-np.linspace(0.1, 2.0, n)[None], dtype)
    adv = jnp.asarray(np.linspace(-1.0, 1.0, n)[None], dtype)
    mask = np.ones((1, n), bool)
    sel = losses.kl_cov_loss(lp, lp, adv, mask, ratio=0.29)[1]["selected"]
    assert int(sel.sum()) == int(0.29 * n) == 28
    m = losses.clip_cov_loss(
        lp, lp, adv, mask, key=jax.random.key(0), ratio=0.29, cov_bounds=(-np.inf, np.inf)
    )[1]
    assert int(m["selected"].sum()) == 28


def test_clip_and_kl_cov_vmap_over_groups():
    lp, olp, adv, mask = random_batch(11, (4, 3, 20))
    key = jax.random.key(0)
    f = functools.partial(losses.clip_cov_loss, key=key, ratio=0.1, cov_bounds=(-5.0, 5.0))
    got = jax.vmap(lambda *a: f(*a)[0])(lp, olp, adv, mask)
    for g in range(4):
        np.testing.assert_allclose(got[g], f(lp[g], olp[g], adv[g], mask[g])[0], rtol=1e-12)
    got = jax.vmap(lambda *a: losses.kl_cov_loss(*a, ratio=0.1)[1]["selected"])(lp, olp, adv, mask)
    for g in range(4):
        np.testing.assert_array_equal(got[g], po.kl_cov_selected(lp[g], adv[g], mask[g], 0.1))


def test_selection_under_jit_is_shape_static():
    f = jax.jit(lambda *a, key: losses.clip_cov_loss(*a, key=key, ratio=0.1)[1]["selected"])
    for seed in range(3):
        lp, olp, adv, mask = random_batch(seed)
        assert f(lp, olp, adv, mask, key=jax.random.key(seed)).shape == lp.shape
    assert f._cache_size() == 1


# --------------------------------------------------------------------------------------- STEER


def policy_from_logits(seed, shape=(3, 7), vocab=6, scale=1.5):
    """Explicit policy logits, sampled tokens, their log-prob and entropy (float64, numpy)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(*shape, vocab)) * scale
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    tokens = np.argmax(rng.random((*shape, 1)) < np.cumsum(p, -1), -1)
    lp = np.log(np.take_along_axis(p, tokens[..., None], -1)[..., 0])
    ent = -np.sum(p * np.log(p), -1)
    old = logits + rng.normal(0, 0.3, logits.shape)  # the rollout policy's logits
    old = old - np.log(np.exp(old).sum(-1, keepdims=True))
    olp = np.take_along_axis(old, tokens[..., None], -1)[..., 0]
    adv = rng.normal(size=shape)
    mask = rng.random(shape) < 0.8
    return logits, tokens, lp, olp, adv, mask, ent


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("mode", ["linear", "exp"])
@pytest.mark.parametrize("omega", ["one_logit", "released_code"])
def test_steer_weights_match_the_papers_definitions(seed, mode, omega):
    logits, tokens, lp, olp, adv, mask, ent = policy_from_logits(seed)
    w = losses.steer_weights(lp, olp, adv, mask, entropy=ent, mode=mode, omega=omega)
    want = po.steer(logits, tokens, olp, adv, mask, mode, 0.8, 1.2, omega)
    # Central differences with h = 1e-5 carry a relative error of about 1e-10.
    np.testing.assert_allclose(w, want, rtol=1e-7, atol=1e-9)
    hi = 1.2 if mode == "linear" else 1.0
    assert np.all((np.asarray(w)[mask] >= 0.8 - 1e-12) & (np.asarray(w)[mask] <= hi + 1e-12))
    assert np.ptp(np.asarray(w)[mask]) > 0.05  # the weights do vary
    # Garbage in the masked slots changes nothing, in value or gradient.
    bad = [np.where(mask, x, np.nan) for x in (lp, olp, adv, ent)]
    np.testing.assert_array_equal(
        losses.steer_weights(*bad[:3], mask, entropy=bad[3], mode=mode, omega=omega), w
    )


def test_steer_weights_over_a_mesh_axis_equal_the_concatenated_batch():
    logits, tokens, lp, olp, adv, mask, ent = policy_from_logits(7, shape=(16, 5))
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    spec = PartitionSpec("data")
    put = functools.partial(jax.device_put, device=NamedSharding(mesh, spec))
    for mode in ("linear", "exp"):

        def local(*a, mode=mode):
            return losses.steer_weights(*a[:4], entropy=a[4], mode=mode, axis_name="data")

        sharded = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(spec,) * 5, out_specs=spec))(
            *(put(x) for x in (lp, olp, adv, mask, ent))
        )
        want = losses.steer_weights(lp, olp, adv, mask, entropy=ent, mode=mode)
        np.testing.assert_allclose(sharded, want, rtol=1e-12)
        # Per-device extrema differ from the global ones: the reduction matters.
        shard0 = losses.steer_weights(*(x[:2] for x in (lp, olp, adv, mask)), entropy=ent[:2])
        assert np.abs(np.asarray(shard0) - np.asarray(want[:2])).max() > 1e-3


def test_steer_one_logit_omega_predicts_entropy_change():
    rng = np.random.default_rng(12)
    z = rng.normal(size=6) * 2
    a, adv, eta = 2, 1.5, 1e-4
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    h = oracles.entropy(p)
    p_old = p[a] * 1.1
    # The surrogate's gradient step on the sampled logit: dz_a = eta (A / p_old) p (1 - p).
    z2 = z.copy()
    z2[a] += eta * adv / p_old * p[a] * (1 - p[a])
    p2 = np.exp(z2 - z2.max()) / np.exp(z2 - z2.max()).sum()
    dh = oracles.entropy(p2) - h
    omega = adv / p_old * p[a] ** 2 * (1 - p[a]) * (np.log(p[a]) + h)
    np.testing.assert_allclose(dh, -eta * omega, rtol=1e-3)


def test_steer_loss_is_weighted_ppo():
    logits, tokens, lp, olp, adv, mask, ent = policy_from_logits(13, shape=(6, 9))
    loss, m = losses.steer_loss(lp, olp, adv, mask, entropy=ent, weight_kwargs={"mode": "exp"})
    w = po.steer(logits, tokens, olp, adv, mask, "exp", 0.8, 1.2, "one_logit")
    base, _, _ = po.ppo(lp, olp, adv, mask)
    np.testing.assert_allclose(loss, w * base, rtol=1e-7, atol=1e-12)
    assert 0.8 <= float(m["weight_min"]) <= float(m["weight_max"]) <= 1.0
    # An empty batch: zero loss and neutral metrics, no error.
    empty = np.zeros((2, 0))
    loss, m = losses.steer_loss(empty, empty, empty, empty.astype(bool), entropy=empty)
    assert loss.shape == (2, 0) and float(m["weight_min"]) == 0.0


# ---------------------------------------------------------------------------------------- GRPO


@given(
    hnp.arrays(np.float64, (3, 5), elements=st.sampled_from([0.0, 1.0, 0.5, -2.0])),
    hnp.arrays(np.bool_, (3, 5)),
    st.booleans(),
    st.sampled_from([1e-6, 0.0]),
)
def test_grpo_advantages_match_oracle(rewards, where, scale, eps):
    got = losses.grpo_advantages(rewards, where=where, scale_by_std=scale, eps=eps)
    np.testing.assert_allclose(got, po.grpo(rewards, where, scale, eps), rtol=1e-9, atol=1e-12)
    assert np.all(np.isfinite(got))
    g = jax.grad(lambda r: losses.grpo_advantages(r, where=where, eps=eps).sum())(rewards)
    assert np.all(np.isfinite(g))


# ------------------------------------------------------------------ temperature and diagnostics


def test_token_log_probs_with_temperature():
    rng = np.random.default_rng(14)
    logits = rng.normal(size=(4, 9)) * 3
    logits[0, 3] = -np.inf
    tokens = np.array([1, 2, 3, 4])
    for tau in [0.5, 1.0, 1.7]:
        lp, h = losses.token_log_probs(logits, tokens, temperature=tau)
        for i in range(4):
            p = oracles.softmax(logits[i] / tau)
            np.testing.assert_allclose(h[i], oracles.entropy(p), rtol=1e-10)
            want = np.log(p[tokens[i]]) if p[tokens[i]] > 0 else -np.inf
            np.testing.assert_allclose(lp[i], want, rtol=1e-10)
    lp_bf16, _ = losses.token_log_probs(jnp.asarray(logits, jnp.bfloat16), tokens)
    assert lp_bf16.dtype != jnp.bfloat16
    with pytest.raises(ValueError, match="temperature"):
        losses.token_log_probs(logits, tokens, temperature=0.0)
    with pytest.raises(TypeError, match="tokens"):
        losses.token_log_probs(logits, tokens.astype(float))


def test_solve_temperature_reaches_target():
    logits = np.random.default_rng(15).normal(size=(32, 50)) * 2
    rows = np.arange(32) < 20
    for target in [0.5, 2.0, 3.5]:
        tau, h = losses.solve_temperature(logits, target, mask=rows)
        got = np.mean([oracles.entropy(oracles.softmax(z / float(tau))) for z in logits[rows]])
        np.testing.assert_allclose(got, target, atol=1e-5)
        np.testing.assert_allclose(h, target, atol=1e-5)
    tau, h = losses.solve_temperature(logits, 10.0)  # above log 50: unreachable
    assert float(tau) == pytest.approx(100.0, rel=1e-5) and h < np.log(50)
    per_row = jax.vmap(lambda z: losses.solve_temperature(z, 1.0)[0])(logits)
    assert per_row.shape == (32,)


def test_first_order_entropy_change_and_softmax_identity():
    rng = np.random.default_rng(16)
    z = rng.normal(size=(5, 8))
    dz = 1e-4 * rng.normal(size=(5, 8))
    pred = losses.first_order_entropy_change(z, dz)
    for i in range(5):
        dh = oracles.entropy(oracles.softmax(z[i] + dz[i])) - oracles.entropy(oracles.softmax(z[i]))
        np.testing.assert_allclose(pred[i], dh, rtol=2e-3)
    # dH/dz_a = -pi_a (log pi_a + H)
    g = jax.grad(lambda x: entreg.entropy(x).sum())(z)
    p = np.stack([oracles.softmax(r) for r in z])
    h = np.array([oracles.entropy(r) for r in p])
    np.testing.assert_allclose(g, -p * (np.log(p) + h[:, None]), rtol=1e-10)


def test_fit_entropy_reward_recovers_law():
    h = np.linspace(0.05, 1.5, 40)
    fit = losses.fit_entropy_reward(h, -0.3 * np.exp(h) + 1.2)
    np.testing.assert_allclose([fit.a, fit.b, fit.r2], [0.3, 1.2, 1.0], rtol=1e-9)
    noisy = -0.3 * np.exp(h) + 1.2 + np.random.default_rng(0).normal(0, 0.05, h.size)
    fit = losses.fit_entropy_reward(h, noisy)
    x = np.exp(h)
    slope, icpt = np.polyfit(x, noisy, 1)
    r2 = 1 - np.sum((noisy - (slope * x + icpt)) ** 2) / np.sum((noisy - noisy.mean()) ** 2)
    np.testing.assert_allclose([fit.a, fit.b, fit.r2], [-slope, icpt, r2], rtol=1e-9)


# ----------------------------------------------------------------------------------------- EPO


def test_epo_phase_weight():
    k = np.array([0, 37.5, 74.999, 75, 112.5, 150, 300])
    want = [
        1.0,
        1 - 0.2 * (1 - np.exp(-1.0)),
        1 - 0.2 * (1 - np.exp(-2.0 * 74.999 / 75)),
        0.8,
        0.8 * np.exp(-1.5),
        0.8 * np.exp(-3.0),
        0.8 * np.exp(-3.0),
    ]
    np.testing.assert_allclose(losses.epo_phase_weight(k), want, rtol=1e-6)


def test_epo_penalty_is_a_differentiable_corridor_and_state_is_per_turn_running_mean():
    rng = np.random.default_rng(17)
    h = rng.uniform(0, 2, (4, 6))
    turns = np.repeat(np.arange(3)[None], 4, 0).repeat(2, 1)[:, :6]
    mask = np.ones((4, 6), bool)
    state = losses.EpoState(jnp.array([0.5, 0.2, 1.0]), jnp.array([3, 1, 0], jnp.int32))
    pen = losses.epo_penalty(h, mask, turns, state, kappa_low=0.5, kappa_high=1.5)
    ref = np.array([0.5, 0.2, h[turns == 2].mean()])[turns]
    want = np.maximum(0.5 * ref - h, 0) + np.maximum(h - 1.5 * ref, 0)
    np.testing.assert_allclose(pen, want, rtol=1e-6)
    g = jax.grad(lambda x: losses.epo_penalty(x, mask, turns, state).sum())(h)
    outside = h > 2 * ref
    assert outside.any() and np.all(np.asarray(g)[outside] == 1) and np.all(g[~outside] == 0)

    new = losses.epo_update(state, h, mask, turns)
    means = np.array([h[turns == j].mean() for j in range(3)])
    np.testing.assert_allclose(
        new.reference, [(0.5 * 3 + means[0]) / 4, (0.2 + means[1]) / 2, means[2]], rtol=1e-6
    )
    np.testing.assert_array_equal(new.count, [4, 2, 1])
    # A turn absent from this step keeps its reference.
    absent = losses.epo_update(state, h, mask & (turns != 1), turns)
    assert float(absent.reference[1]) == pytest.approx(0.2) and int(absent.count[1]) == 1


def test_epo_term_matches_the_papers_definitions_over_training():
    """epo_term inside compose against a from-the-paper oracle over 6 steps of a K = 6 run
    (both phases of beta), with entropies inside and outside the corridor."""
    rng = np.random.default_rng(19)
    turns = np.repeat(np.arange(3), 4)[None].repeat(4, 0)
    mask = rng.random((4, 12)) < 0.85
    entropies = [rng.uniform(0.1, 2.5, (4, 12)) * (1 + 0.5 * (k % 2)) for k in range(6)]
    kw = dict(entropy_coef=0.05, smooth_coef=2.0, total_epochs=6)
    want = po.epo_run(
        entropies, mask, turns, 3, c_h=0.05, c_s=2.0, total_epochs=6, kappa_l=0.6, kappa_r=1.3
    )

    def base(h):
        return 0.0, {"entropy": h, "mask": mask, "turn_ids": turns}

    term = losses.epo_term(num_turns=3, kappa_low=0.6, kappa_high=1.3, **kw)
    loss_fn = entreg.compose(base, term)
    state, step_fn = loss_fn.init(), jax.jit(loss_fn)
    for k, (h, (loss, h_mean, pen, beta)) in enumerate(zip(entropies, want, strict=True)):
        total, (state, metrics) = step_fn(h, state=state, step=k)
        # EpoState keeps the running references in float32: relative error ~1e-8.
        np.testing.assert_allclose(total, loss, rtol=1e-7)
        np.testing.assert_allclose(metrics["epo/value"], h_mean, rtol=1e-12)
        np.testing.assert_allclose(metrics["epo/penalty"], pen, rtol=1e-7)
        np.testing.assert_allclose(metrics["epo/phase_weight"], beta, rtol=1e-12)
    assert min(w[2] for w in want) > 0.05  # the corridor is active on these entropies


def test_epo_term_in_compose():
    rng = np.random.default_rng(18)
    turns = np.repeat(np.arange(2), 4)[None].repeat(3, 0)
    mask = np.ones((3, 8), bool)

    def base(h):
        return 0.0, {"entropy": h, "mask": mask, "turn_ids": turns}

    loss_fn = entreg.compose(base, losses.epo_term(num_turns=2, entropy_coef=0.01, kappa_high=1.2))
    state = loss_fn.init()
    for step in range(3):
        h = rng.uniform(0, 2, (3, 8))
        per_token, _ = losses.epo_loss(
            h, mask, turns, state["epo"], epoch=step, entropy_coef=0.01, kappa_high=1.2
        )
        (loss, (state, metrics)), g = jax.value_and_grad(loss_fn, has_aux=True)(
            h, state=state, step=step
        )
        np.testing.assert_allclose(loss, np.asarray(per_token).mean(), rtol=1e-10)
        np.testing.assert_allclose(metrics["epo/value"], h.mean(), rtol=1e-10)
        assert np.all(np.isfinite(g))
    assert np.asarray(state["epo"].count).tolist() == [3, 3]
    with pytest.raises(ValueError, match="step"):
        loss_fn(h, state=state)


# ------------------------------------------------------------------------ trace-time errors


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda b: losses.ppo_loss(*b[:3], b[3][:, :-1]), ValueError, "mask"),
        (lambda b: losses.ppo_loss(b[0], b[1][:, :-1], *b[2:]), ValueError, "old_log_prob"),
        (lambda b: losses.ppo_loss(b[0].astype(int), *b[1:]), TypeError, "log_prob"),
        (lambda b: losses.ppo_loss(*b, eps_low=-0.1), ValueError, "eps_low"),
        (lambda b: losses.ppo_loss(*b, dual_clip=1.0), ValueError, "dual_clip"),
        (lambda b: losses.ppo_loss(*b, kl_kind="k9", ref_log_prob=b[0]), ValueError, "kind"),
        (
            lambda b: losses.clip_cov_loss(*b, key=jax.random.key(0), ratio=-1e-3),
            ValueError,
            "ratio",
        ),
        (lambda b: losses.clip_cov_loss(*b, key=jnp.zeros(3)), TypeError, "key"),
        (
            lambda b: losses.clip_cov_loss(*b, key=jax.random.key(0), cov_bounds=(5, 1)),
            ValueError,
            "cov_bounds",
        ),
        (lambda b: losses.kl_cov_loss(*b, ratio=2.0), ValueError, "fraction"),
        (lambda b: losses.kl_cov_loss(*b, beta=-1.0), ValueError, "beta"),
        (lambda b: losses.steer_weights(*b, entropy=b[0], w_min=1.3), ValueError, "w_max"),
        (lambda b: losses.steer_weights(*b, entropy=b[0][:1]), ValueError, "entropy"),
        (lambda b: losses.grpo_advantages(b[2], where=b[3][:1, :2]), ValueError, "where"),
    ],
)
def test_bad_arguments_fail_at_trace_time(call, error, match):
    batch = tuple(jax.ShapeDtypeStruct(x.shape, x.dtype) for x in random_batch(0, (3, 5)))
    with pytest.raises(error, match=match):
        jax.eval_shape(lambda *b: call(b), *batch)
