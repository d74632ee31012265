"""entreg.decoding: processors against HF-style float64 oracles, Mirostat against the paper's
algorithm, sampling frequencies (chi-square), vmap, keys, bf16, bad input, generate, switching.

Tolerances: float64 inputs run the float64 path, so masks compare exactly and values to ~1e-10
(the float64 oracles sum in another order); bf16 inputs are compared with the float32 run of
their values. Chi-square tests use fixed seeds and a 1e-3 level: deterministic, and they fail
only on a real departure. jit-vs-eager and gradients of every public callable are checked by
the adversarial suite (tests/adversarial_decoding.py).

Compilation dominates the time of these tests (a draw with per-row keys takes XLA:CPU ~2 s to
compile), so each test compiles one function that computes everything it checks, and the
Mirostat tests share two jitted steppers.
"""

import math
import re
from functools import partial

import decoding_oracles as oracle
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import entreg
from entreg import decoding

NEG = -np.inf
V = 9


def _rows() -> np.ndarray:
    """Adversarial rows: continuous, -inf, exact ties, ramps, +-1e4, one token, none."""
    rng = np.random.default_rng(0)
    rows = [rng.normal(size=V) * s for s in (0.5, 1.0, 2.0, 4.0)]
    r = rng.normal(size=V) * 2
    r[[1, 4]] = NEG
    rows.append(r)
    rows.append(rng.integers(0, 3, size=V).astype(float))  # ties
    rows.append(np.log([0.4, 0.2, 0.2, 0.2, 1e-9, 1e-9, 1e-9, 1e-9, 1e-9]))
    rows.append(np.arange(V, dtype=float) - 5)  # HF's ramp
    rows.append(100 * (np.arange(V, dtype=float) - 5))
    rows.append(np.array([1e4, 0, -1e4, 3, 0, 0, 1, 2, -1.0]))
    rows.append(np.array([NEG] * 4 + [1.5] + [NEG] * 4))  # one token
    rows.append(np.full(V, NEG))  # fully masked
    return np.array(rows)


ROWS = _rows()
GRIDS = {
    # name: (processor, oracle, per-row parameter values)
    "top_p": (decoding.top_p, oracle.top_p, [0.05, 0.33, 0.5, 0.77, 0.95, 1.0]),
    "typical_p": (decoding.typical_p, oracle.typical_p, [0.05, 0.2, 0.5, 0.9, 0.95, 1.0]),
    "min_p": (decoding.min_p, oracle.min_p, [0.0, 0.01, 0.1, 0.3, 0.9, 1.0]),
    "epsilon_cutoff": (decoding.epsilon_cutoff, oracle.epsilon_cutoff, [0.0, 1e-3, 0.05, 0.2]),
    "eta_cutoff": (decoding.eta_cutoff, oracle.eta_cutoff, [0.0, 1e-3, 0.05, 0.2, 0.6]),
    "top_k": (decoding.top_k, oracle.top_k, [1, 2, 3, 5, 9, 20]),
}
KEEP_MIN = (1, 3)


def _grid(values):
    """Every row with every parameter value: (Z [R*P, V], params [R*P])."""
    return np.repeat(ROWS, len(values), axis=0), np.tile(np.asarray(values), len(ROWS))


def _kept(out):
    return np.isfinite(np.asarray(out))


# ----------------------------------------------------------------------------------------------
# Processors against the oracles
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def processed():
    """Every processor on its grid, per-row (traced) parameters, both min_tokens_to_keep; and
    top-k with each static k: one compilation."""

    @jax.jit
    def run(grids):
        out = {}
        for keep_min in KEEP_MIN:
            for name, (z, params) in grids.items():
                fn = GRIDS[name][0]
                out[name, keep_min] = fn(z, params, min_tokens_to_keep=keep_min)
            for k in GRIDS["top_k"][2]:
                out["static", k, keep_min] = decoding.top_k(ROWS, k, min_tokens_to_keep=keep_min)
        return out

    return run({name: _grid(values) for name, (_, _, values) in GRIDS.items()})


@pytest.mark.parametrize("name", sorted(GRIDS))
@pytest.mark.parametrize("keep_min", KEEP_MIN)
def test_processor_matches_hf_rule(processed, name, keep_min):
    _, ref, values = GRIDS[name]
    z, params = _grid(values)
    out = np.asarray(processed[name, keep_min])
    assert out.dtype == np.float64
    kept = _kept(out)
    for i in range(len(z)):
        param = int(params[i]) if name == "top_k" else float(params[i])
        expected = ref(z[i], param, keep_min)
        np.testing.assert_array_equal(kept[i], expected, err_msg=f"row {i}: {z[i]}, {params[i]}")
        np.testing.assert_array_equal(out[i][kept[i]], z[i][kept[i]])  # kept logits unchanged
    # At least one token survives in every row that has one; an empty row stays empty.
    has = np.isfinite(z).sum(-1)
    assert (kept.sum(-1) >= np.minimum(keep_min, has)).all() and not kept[has == 0].any()


@pytest.mark.parametrize("keep_min", KEEP_MIN)
def test_top_k_static_k_matches_hf(processed, keep_min):
    for k in GRIDS["top_k"][2]:
        kept = _kept(processed["static", k, keep_min])
        for i, row in enumerate(ROWS):
            np.testing.assert_array_equal(kept[i], oracle.top_k(row, k, keep_min), f"{k}, {i}")


def test_pinned_values_from_the_reference_tests():
    @jax.jit
    def run():
        def lg(p):
            return jnp.log(jnp.asarray(p, jnp.float64))

        ramps = jnp.stack([jnp.arange(10.0) - 5, 100 * (jnp.arange(10.0) - 5)])
        return [
            # Typical, the authors' test: H = 0.1677 and 1.3322 nats.
            decoding.typical_p(lg([[0.97, 0.01, 0.01, 0.01], [0.4, 0.2, 0.2, 0.2]]), 0.5),
            decoding.typical_p(lg([0.25] * 4), 0.5, min_tokens_to_keep=3),
            # HF epsilon / eta / min-p tests.
            decoding.epsilon_cutoff(
                lg([[0.87, 0.099, 0.001, 0.03], [0.4, 0.299, 0.101, 0.2]]), 0.1
            ),
            decoding.eta_cutoff(lg([[0.01, 0.04, 0.9, 0.05], [0.0, 0.1, 0.8, 0.1]]), 0.0625),
            decoding.min_p(
                lg(
                    [[0.9, 0.0274, 0.047, 0.0274], [0.15, 0.3, 0.3, 0.25], [0.97, 0.01, 0.01, 0.01]]
                ),
                0.05,
            ),
            # HF ramps with min_tokens_to_keep 2: top-p 0.9 and epsilon 0.05 keep 3 and 2.
            decoding.top_p(ramps, 0.9, min_tokens_to_keep=2),
            decoding.epsilon_cutoff(ramps, 0.05, min_tokens_to_keep=2),
        ]

    typical, uniform, eps, eta, minp, top_p, eps_ramp = (
        _kept(x).astype(int).tolist() for x in run()
    )
    assert typical == [[1, 0, 0, 0], [0, 1, 1, 1]] and sum(uniform) == 4
    assert eps == [[1, 0, 0, 0], [1, 1, 1, 1]]
    assert eta == [[0, 0, 1, 0], [0, 1, 1, 1]]  # cutoffs min(0.0625, 0.1644), min(0.0625, 0.1320)
    assert minp == [[1, 0, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    for kept in (top_p, eps_ramp):
        assert [sum(r) for r in kept] == [3, 2] and all(r[-2:] == [1, 1] for r in kept)


def test_eta_uses_sqrt_epsilon_times_exp_minus_entropy():
    """eta = min(eps, sqrt(eps) e^-H), not HF's docstring sqrt(eps e^-H): they differ here."""
    z = np.log(np.array([0.5] + [0.5 / 20] * 20))
    h = oracle.entropy(z)
    eps = 0.04
    paper, docstring = math.sqrt(eps) * math.exp(-h), math.sqrt(eps * math.exp(-h))
    assert paper < 0.025 < min(eps, docstring)  # the tail passes the paper's cutoff only
    assert _kept(decoding.eta_cutoff(z, eps)).all()


_PREFIX_RULES = jax.jit(lambda z, p: (decoding.top_p(z, p), decoding.typical_p(z, p)))


@settings(max_examples=20)
@given(st.lists(st.floats(-30, 30), min_size=V, max_size=V), st.floats(0.01, 1.0))
def test_prefix_rules_keep_their_mass_minimally(logits, p):
    z = np.asarray(logits)
    pr = oracle.probs(z)[0]
    deviation = np.abs(-oracle.log_probs(z)[0] - oracle.entropy(z))
    for out, score in zip(_PREFIX_RULES(z[None], np.array([p])), (pr, -deviation), strict=True):
        kept = _kept(out)[0]
        assert pr[kept].sum() >= p * (1 - 1e-12)
        # Minimal: without the kept tokens of the lowest score (a tie group) the mass is < p.
        boundary = kept & (score == score[kept].min())
        assert pr[kept & ~boundary].sum() < p
        assert (score[~kept] < score[kept].min()).all()  # a threshold: nothing better dropped


def test_garbage_never_leaks_and_axis_where_layouts():
    z = np.array([[2.0, np.nan, 1.0, NEG, np.inf, 0.5], [np.nan] * 6, [3.0, 1, 2, 4, 5, 6]])
    where = np.broadcast_to(np.array([True, True, True, True, True, False]), z.shape)
    fns = [
        partial(decoding.top_k, k=2),
        partial(decoding.top_k, k=np.array([2, 2, 2])),
        partial(decoding.top_p, p=0.9),
        partial(decoding.typical_p, p=0.9),
        partial(decoding.min_p, p=0.1),
        partial(decoding.epsilon_cutoff, epsilon=0.01),
        partial(decoding.eta_cutoff, epsilon=0.01),
        partial(decoding.entropy_temperature, target_entropy=0.5),
    ]
    zz = np.random.default_rng(1).normal(size=(2, V, 3))
    rows = np.array([[True, False, True], [True, True, True]])

    @jax.jit
    def run():
        outs = [f(z, where=where) for f in fns]
        moved = decoding.top_p(zz, 0.6, axis=1)
        last = decoding.top_p(jnp.moveaxis(zz, 1, -1), 0.6)
        row_mask = decoding.top_k(jnp.moveaxis(zz, 1, -1), 2, where=rows)
        return outs, moved, last, row_mask

    outs, moved, last, row_mask = run()
    for f, out in zip(fns, outs, strict=True):
        out = np.asarray(out)
        assert not np.isnan(out).any(), f
        assert np.isneginf(out[0, [1, 3]]).all() and np.isneginf(out[:, 5]).all()
        assert np.isneginf(out[1]).all()  # an all-NaN row keeps nothing
        assert np.isfinite(out[0, 4]) and _kept(out[2]).any()  # +inf is the most probable
    np.testing.assert_array_equal(moved, np.moveaxis(np.asarray(last), -1, 1))
    assert np.isneginf(row_mask[0, 1]).all() and _kept(row_mask[0, 0]).sum() == 2


def test_traced_out_of_range_parameter_gives_nan_rows():
    """A traced parameter out of range makes its row NaN (a concrete one raises); a sampler then
    reports that row invalid, as for the NaN row of the Mirostat step test."""

    @jax.jit
    def run(p, k):
        z = jnp.zeros((3, 4))
        return decoding.top_p(z, p), decoding.top_k(z, k), decoding.entropy_temperature(z, p - 1)

    out, k_out, t_out = run(jnp.array([0.5, 1.5, -1.0]), jnp.array([1, 0, 2]))
    assert np.isfinite(out[0]).sum() == 4 and np.isnan(out[1:]).all()
    assert np.isnan(k_out[1]).all() and np.isfinite(k_out[2]).sum() == 4  # ties with the 2nd
    assert np.isnan(np.asarray(t_out)[[0, 2]]).all() and np.isfinite(t_out[1]).all()


def test_bf16_inputs_give_the_masks_of_their_float32_values():
    zb = jnp.asarray(np.random.default_rng(4).normal(size=(6, 50)) * 3, jnp.bfloat16)
    fns = [
        partial(decoding.top_p, p=0.8),
        partial(decoding.typical_p, p=0.6),
        partial(decoding.min_p, p=0.05),
    ]
    outs = jax.jit(lambda z: [(f(z), f(z.astype(jnp.float32))) for f in fns])(zb)
    for bf, f32 in outs:
        assert bf.dtype == jnp.float32
        np.testing.assert_array_equal(_kept(bf), _kept(f32))


def test_vmap_equals_batched_call():
    z = jnp.asarray(np.random.default_rng(5).normal(size=(8, V)), jnp.float32)
    fns = [
        partial(decoding.top_p, p=0.7),
        partial(decoding.typical_p, p=0.7),
        partial(decoding.top_k, k=3),
        partial(decoding.eta_cutoff, epsilon=0.05),
    ]
    outs = jax.jit(lambda z: [(f(z), jax.vmap(f)(z)) for f in fns])(z)
    for batched, mapped in outs:
        np.testing.assert_array_equal(batched, mapped)


def test_vocabulary_150k_batch_8_compiles_without_sort_or_large_temporaries():
    """Qwen's padded head, [8, 151936] float32: every processor and sampler in one function,
    compiled (not run), has no sort op (lax.top_k stays a TopK) and needs at most 24 [B, V]
    float32 buffers of temporary memory (measured 14.1 with jax 0.10.2 on CPU; headroom for
    other XLA versions): a [B, V, V] temporary would be V times one buffer, a [B, V, 100] one
    (e.g. a gathered Zipf window) 100 times, and a sort of the vocabulary adds sort ops. Times:
    experiments/bench_decoding.py."""
    batch, vocab = 8, 151936
    key = jax.random.key(0)

    def everything(z, mu):
        state = decoding.MirostatState(mu)
        return (
            decoding.top_k(z, 50),
            decoding.top_k(z, jnp.full(batch, 40)),
            decoding.top_p(z, 0.9),
            decoding.typical_p(z, 0.9),
            decoding.min_p(z, 0.05),
            decoding.epsilon_cutoff(z, 3e-4),
            decoding.eta_cutoff(z, 2e-3),
            decoding.entropy_temperature(z, 3.0),
            decoding.mirostat_v1(key, z, state, 5.0),
            decoding.mirostat_v2(key, z, state, 5.0),
            decoding.sampler(partial(decoding.top_p, p=0.9))(key, z, None),
        )

    compiled = (
        jax.jit(everything)
        .lower(
            jax.ShapeDtypeStruct((batch, vocab), jnp.float32),
            jax.ShapeDtypeStruct((batch,), jnp.float32),
        )
        .compile()
    )
    assert re.findall(r"\bsort\(", compiled.as_text()) == []
    temp = compiled.memory_analysis().temp_size_in_bytes
    assert temp <= 24 * batch * vocab * 4, temp / (batch * vocab * 4)


# ----------------------------------------------------------------------------------------------
# Zipf fit and Mirostat against the paper's algorithm
# ----------------------------------------------------------------------------------------------


def zipf_logits(n, s):
    return -s * np.log(np.arange(1, n + 1, dtype=np.float64))


def test_zipf_exponent_exact_on_zipf_rows_and_matches_oracle():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(4, 300)) * 2
    z[1, :250] = NEG  # fewer than m tokens: pairs reaching excluded ones are left out
    z[2, 1:] = NEG  # one token: 0
    exact = np.stack([zipf_logits(300, s) for s in (0.7, 1.1, 2.0)])
    got = jax.jit(decoding.zipf_exponent)(np.concatenate([exact, rng.permutation(z, axis=1)]))
    np.testing.assert_allclose(got[:3], [0.7, 1.1, 2.0], rtol=1e-12)
    np.testing.assert_allclose(got[3:], [oracle.zipf_fit(r) for r in z], rtol=1e-12)
    assert got[5] == 0.0


def test_oracle_reproduces_the_k_values_of_the_sheet():
    """Exact Zipf, N = 50000: k(mu=10, s=1.1) = 97.9, k(6, 1.1) = 7.88, k(6, 1.2) = 9.26 (the
    implementation is then checked against this oracle step by step)."""
    for mu, s, k in [(10, 1.1, 97), (6, 1.1, 7), (6, 1.2, 9)]:
        assert oracle.mirostat_v1_k(zipf_logits(50000, s), mu) == (k, pytest.approx(s))


TAU, ETA, N_MIRO, B_MIRO = 4.0, 0.5, 200, 32
STEPPERS = {
    # The mu update is shared by both versions: these two cover both feedbacks.
    ("v1", "model"): jax.jit(partial(decoding.mirostat_v1, tau=TAU, eta=ETA, feedback="model")),
    ("v2", "truncated"): jax.jit(
        partial(decoding.mirostat_v2, tau=TAU, eta=ETA, feedback="truncated")
    ),
}


def _mirostat_rows(rng):
    """Near-Zipf rows with random exponents and orders; the last three: no token, NaN, one."""
    s = rng.uniform(0.8, 1.6, size=(B_MIRO, 1))
    ranks = np.stack([rng.permutation(N_MIRO) + 1.0 for _ in range(B_MIRO)])
    z = -s * np.log(ranks) + rng.normal(size=(B_MIRO, N_MIRO)) * 0.3
    z[-3] = NEG
    z[-2] = np.nan
    z[-1, 1:] = NEG
    return z


@pytest.mark.parametrize(("version", "feedback"), sorted(STEPPERS))
def test_mirostat_steps_follow_the_algorithm(version, feedback):
    """20 steps: k, s_hat, the kept set, the drawn token, both surprises and mu against a
    plain-Python restatement; rows without a token give the pad token and keep their mu."""
    rng = np.random.default_rng(3)
    step = STEPPERS[version, feedback]
    state = decoding.MirostatState.initial(TAU, B_MIRO, dtype=jnp.float64)
    mu = [2 * TAU] * B_MIRO
    for t in range(20):
        z = _mirostat_rows(rng)
        token, state, m = step(jax.random.key(t), z, state)
        for b in range(B_MIRO):
            if b in (B_MIRO - 3, B_MIRO - 2):  # no token: pad, invalid, frozen, zero metrics
                assert (
                    int(token[b]) == 0 and not bool(m.valid[b]) and float(m.surprise_bits[b]) == 0
                )
                continue
            zb = np.where(np.isnan(z[b]), NEG, z[b])
            if version == "v1":
                k, s_hat = oracle.mirostat_v1_k(zb, mu[b])
                assert int(m.k[b]) == k, (t, b)
                np.testing.assert_allclose(m.zipf_exponent[b], s_hat, rtol=1e-10, atol=1e-12)
                keep = oracle.top_k(zb, k)
            else:
                keep = oracle.mirostat_v2_keep(zb, mu[b])
            assert int(m.kept[b]) == keep.sum() and bool(m.valid[b])
            x = int(token[b])
            assert keep[x]
            p, q = oracle.probs(zb)[0], oracle.renormalized(zb, keep)
            s_model, s_trunc = -math.log2(p[x]), -math.log2(q[x])
            np.testing.assert_allclose(m.surprise_bits[b], s_model, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(
                m.surprise_nats[b], s_model * math.log(2), rtol=1e-10, atol=1e-12
            )
            np.testing.assert_allclose(
                m.truncated_surprise_bits[b], s_trunc, rtol=1e-10, atol=1e-12
            )
            observed = s_model if feedback == "model" else s_trunc
            mu[b] = oracle.mirostat_update(mu[b], observed, TAU, ETA)
        np.testing.assert_allclose(state.mu, mu, rtol=1e-10)


def test_mirostat_feedback_conventions_separate():
    """i.i.d. Zipf rows (s = 1.1): "model" feedback holds the mean untruncated surprise at tau,
    "truncated" feedback the truncated one, and the untruncated surprise then settles clearly
    above tau (the sheet's 5.00 vs 5.75 bits, here at N = 200, tau = 4)."""
    z = np.broadcast_to(zipf_logits(N_MIRO, 1.1), (B_MIRO, N_MIRO))
    means = {}
    for (_, feedback), step in STEPPERS.items():
        state = decoding.MirostatState.initial(TAU, B_MIRO, dtype=jnp.float64)
        late = []
        for t in range(240):
            _, state, m = step(jax.random.key(1000 + t), z, state)
            if t >= 120:
                late.append((m.surprise_bits, m.truncated_surprise_bits))
        means[feedback] = np.asarray(late).mean(axis=(0, 2))
    assert abs(means["model"][0] - TAU) < 0.15, means
    assert abs(means["truncated"][1] - TAU) < 0.15, means
    assert means["truncated"][0] > TAU + 0.4, means


def test_mirostat_v2_examples_of_the_sheet():
    """p = (1/2, 1/4, 1/8, ...): mu = 2.5 keeps two tokens, renormalized (2/3, 1/3); mu < 0 keeps
    only the argmax (truncated surprise exactly 0). Through the shared stepper's shapes."""
    z = np.broadcast_to(-math.log(2) * np.arange(1.0, N_MIRO + 1), (B_MIRO, N_MIRO))
    mu = np.full(B_MIRO, 2.5)
    mu[1] = -1.0
    _, _, m = STEPPERS["v2", "truncated"](
        jax.random.key(0), z, decoding.MirostatState(jnp.asarray(mu))
    )
    assert m.kept.tolist()[:2] == [2, 1]
    np.testing.assert_allclose(m.kept_mass[:2], [0.75, 0.5], rtol=1e-12)
    assert float(m.truncated_surprise_bits[1]) == 0.0 and float(m.truncated_entropy[1]) == 0.0
    h = -(2 / 3) * math.log(2 / 3) - (1 / 3) * math.log(1 / 3)
    np.testing.assert_allclose(m.truncated_entropy[0], h, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# Sampling frequencies (chi-square) against each truncated, renormalized distribution
# ----------------------------------------------------------------------------------------------

DRAWS = 6000
ROW = np.log(np.array([0.3, 0.2, 0.15, 0.1, 0.08, 0.06, 0.05, 0.04, 0.02]))
FREQUENCY_CASES = {
    "top_k": (partial(decoding.top_k, k=3), oracle.top_k(ROW, 3)),
    "top_p": (partial(decoding.top_p, p=0.6), oracle.top_p(ROW, 0.6)),
    "typical_p": (partial(decoding.typical_p, p=0.5), oracle.typical_p(ROW, 0.5)),
    "min_p": (partial(decoding.min_p, p=0.2), oracle.min_p(ROW, 0.2)),
    "epsilon_cutoff": (
        partial(decoding.epsilon_cutoff, epsilon=0.045),
        oracle.epsilon_cutoff(ROW, 0.045),
    ),
    "eta_cutoff": (partial(decoding.eta_cutoff, epsilon=0.1), oracle.eta_cutoff(ROW, 0.1)),
    "entropy_temperature": (partial(decoding.entropy_temperature, target_entropy=1.2), None),
    "none": (lambda z: z, np.ones(V, bool)),
}


@pytest.fixture(scope="module")
def frequencies():
    """Token counts of DRAWS independent draws of ROW through each processor: one `sample` call
    on all of them stacked (one compilation). Mirostat's draw is the same code; its kept sets
    and tokens are checked step by step above."""
    names = list(FREQUENCY_CASES)

    @jax.jit
    def run(key):
        rows = jnp.broadcast_to(jnp.asarray(ROW), (DRAWS, V))
        processed = jnp.concatenate([FREQUENCY_CASES[n][0](rows) for n in names])
        model = jnp.tile(rows, (len(names), 1))
        tokens, m = decoding.sample(key, processed, model_logits=model)
        tempered = processed[names.index("entropy_temperature") * DRAWS]
        # Row i draws with fold_in(key, i): three rows alone, vmapped with explicit per-row
        # keys, draw what they draw in the whole batch.
        keys = jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(3))
        alone = jax.vmap(lambda k, r: decoding.sample(k, r)[0])(keys, processed[:3])
        return tokens.reshape(len(names), DRAWS), tempered, m.surprise_bits, alone

    tokens, tempered, surprise, alone = run(jax.random.key(11))
    np.testing.assert_array_equal(alone, tokens[0, :3])
    counts = {
        n: np.bincount(np.asarray(t), minlength=V) for n, t in zip(names, tokens, strict=True)
    }
    return counts, np.asarray(tempered), np.asarray(surprise)


@pytest.mark.parametrize("name", list(FREQUENCY_CASES))
def test_sampling_frequencies_match_truncated_distribution(frequencies, name):
    counts, tempered, _ = frequencies
    if name == "entropy_temperature":
        np.testing.assert_allclose(oracle.entropy(tempered), 1.2, rtol=1e-7)
        q = oracle.probs(tempered)[0]
    else:
        keep = FREQUENCY_CASES[name][1]
        assert 1 < keep.sum() <= V
        q = oracle.renormalized(ROW, keep)
    support = q > 0
    assert counts[name][~support].sum() == 0, (counts[name], q)
    pvalue = stats.chisquare(counts[name][support], DRAWS * q[support]).pvalue
    assert pvalue > 1e-3, (counts[name], DRAWS * q)


def test_surprise_is_measured_under_the_model_distribution(frequencies):
    _, _, surprise = frequencies
    # Every draw's model surprise is -log2 p(x) of one of ROW's tokens.
    assert np.isin(np.round(surprise, 9), np.round(-ROW / math.log(2), 9)).all()


def test_bf16_logits_sample_the_tail():
    """p_max 0.8 and 0.2 spread over 1023 tokens: bf16 Gumbel noise (at most ~5.5) never bridges
    the logit gap of 8.3 (tail frequency 0); the float32 draw gives 0.2."""
    n, draws = 1024, 2000
    z = np.full(n, math.log(0.2 / (n - 1)))
    z[0] = math.log(0.8)
    rows = jnp.broadcast_to(jnp.asarray(z, jnp.bfloat16), (draws, n))
    token, m = jax.jit(decoding.sample)(jax.random.key(0), rows)
    tail = int(np.sum(np.asarray(token) != 0))
    assert stats.binomtest(tail, draws, 0.2).pvalue > 1e-3, tail / draws
    assert m.surprise_bits.dtype == jnp.float32


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "argument"),
    [
        (lambda: decoding.top_k(np.zeros(4), 0), ValueError, "k"),
        (lambda: decoding.top_k(np.zeros(4), 2.5), TypeError, "k"),
        (lambda: decoding.top_k(np.zeros((2, 4)), np.array([1, 0])), ValueError, "k"),
        (lambda: decoding.top_p(np.zeros(4), 0.0), ValueError, "p"),
        (lambda: decoding.top_p(np.zeros(4), 1.5), ValueError, "p"),
        (lambda: decoding.top_p(np.zeros((2, 4)), np.array([0.5, -0.1])), ValueError, "p"),
        (lambda: decoding.typical_p(np.zeros(4), -0.2), ValueError, "p"),
        (lambda: decoding.min_p(np.zeros(4), 1.2), ValueError, "p"),
        (lambda: decoding.epsilon_cutoff(np.zeros(4), -1e-3), ValueError, "epsilon"),
        (lambda: decoding.eta_cutoff(np.zeros(4), float("nan")), ValueError, "epsilon"),
        (
            lambda: decoding.top_p(np.zeros(4), 0.5, min_tokens_to_keep=0),
            ValueError,
            "min_tokens_to_keep",
        ),
        (lambda: decoding.top_p(np.zeros(4), "0.5"), TypeError, "p"),
        (lambda: decoding.top_p(np.zeros(4, int), 0.5), TypeError, "logits"),
        (lambda: decoding.entropy_temperature(np.zeros(4), -1.0), ValueError, "target_entropy"),
        (lambda: decoding.zipf_exponent(np.zeros(4), m=1), ValueError, "m"),
        (lambda: decoding.MirostatState.initial(0.0, 2), ValueError, "tau"),
        (lambda: decoding.MirostatState.initial(1.0, (2, -1)), ValueError, "batch_shape"),
        (
            lambda: decoding.mirostat_v2(
                jax.random.key(0), np.zeros(4), decoding.MirostatState(jnp.array(1.0)), -1.0
            ),
            ValueError,
            "tau",
        ),
        (
            lambda: decoding.mirostat_v2(
                jax.random.key(0),
                np.zeros(4),
                decoding.MirostatState(jnp.array(1.0)),
                1.0,
                eta=-0.1,
            ),
            ValueError,
            "eta",
        ),
        (
            lambda: decoding.mirostat_v1(
                jax.random.key(0), np.zeros((3, 4)), decoding.MirostatState(jnp.zeros(2)), 1.0
            ),
            ValueError,
            "state",
        ),
        (
            lambda: decoding.mirostat_v1(jax.random.key(0), np.zeros(4), (1.0,), 1.0),
            TypeError,
            "state",
        ),
        (
            lambda: decoding.mirostat_v1(
                jax.random.key(0),
                np.zeros(4),
                decoding.MirostatState(jnp.array(1.0)),
                1.0,
                feedback="x",
            ),
            ValueError,
            "feedback",
        ),
        (
            lambda: decoding.sample(
                jax.random.key(0), np.zeros((3, 4)), model_logits=np.zeros((3, 5))
            ),
            ValueError,
            "logits",
        ),
        (lambda: decoding.sample(jnp.zeros(3), np.zeros((3, 4))), TypeError, "key"),
        (
            lambda: decoding.sample(jax.random.split(jax.random.key(0), 2), np.zeros((3, 4))),
            ValueError,
            "key",
        ),
        (lambda: decoding.sampler(0.5), TypeError, "processors"),
        (
            lambda: decoding.generate(
                jax.random.key(0),
                lambda c, t: (t, c),
                (),
                jnp.zeros(2, int),
                0,
                sampler=decoding.sampler(),
            ),
            ValueError,
            "num_steps",
        ),
        (
            lambda: decoding.generate(
                jax.random.key(0),
                lambda c, t: (t, c),
                (),
                jnp.zeros(2),
                3,
                sampler=decoding.sampler(),
            ),
            TypeError,
            "tokens",
        ),
        (lambda: decoding.SwitchState.initial(2, window=0), ValueError, "window"),
        (
            lambda: decoding.entropy_switch(
                lambda c, t: (t, c), lambda c, t: (t, c), 1.0, min_dwell=0
            ),
            ValueError,
            "min_dwell",
        ),
    ],
)
def test_bad_input_raises_naming_the_argument(call, error, argument):
    with pytest.raises(error, match=f"`{argument}`"):
        call()


# ----------------------------------------------------------------------------------------------
# Entropy-targeted temperature and solve_temperature(per_row=True)
# ----------------------------------------------------------------------------------------------


def test_entropy_temperature_hits_reachable_targets_and_clamps_others():
    z = np.random.default_rng(6).normal(size=(4, 30)) * 3
    z[3, 1:] = NEG  # one token: H = 0 at every T
    target = np.array([0.5, 2.0, 4.0, 1.0])  # 4.0 > log 30 = 3.40: unreachable

    @jax.jit
    def run():
        out = decoding.entropy_temperature(z, target)
        tau, _ = entreg.solve_temperature(z, target, per_row=True, iters=32)
        shared = jax.vmap(lambda r, t: entreg.solve_temperature(r, t, iters=32)[0])(z, target)
        return out, entreg.entropy(out), tau, shared

    out, h, tau, shared = run()
    np.testing.assert_allclose(h[:2], target[:2], rtol=1e-7)
    assert 3.2 < h[2] <= math.log(30) and h[3] == 0.0
    np.testing.assert_allclose(out[:3], z[:3] / np.asarray(tau)[:3, None], rtol=1e-12)
    np.testing.assert_allclose(tau[2], 100.0, rtol=1e-8)  # the upper bound (half a bracket)
    np.testing.assert_allclose(tau, shared, rtol=1e-12)  # per_row = one shared solve per row
    with pytest.raises(ValueError, match="`mask`"):
        entreg.solve_temperature(z, 1.0, per_row=True, mask=np.ones(4, bool))


# ----------------------------------------------------------------------------------------------
# generate and entropy_switch
# ----------------------------------------------------------------------------------------------


def _chain_step(table):
    """An order-1 'model' with a KV-cache-like carry: (position, history [B, T])."""

    def step(carry, tokens):
        pos, hist = carry
        hist = hist.at[:, pos].set(tokens.astype(hist.dtype))
        return table[tokens], (pos + 1, hist)

    return step


def test_generate_eos_state_freeze_carry_and_row_ids():
    table = jnp.asarray(np.random.default_rng(8).normal(size=(V, V)) * 2)
    batch, steps, eos, tau = 16, 12, 4, 1.5

    def run(key, first, ids):
        return decoding.generate(
            key,
            _chain_step(table),
            (0, jnp.zeros((len(first), steps), jnp.int32)),
            first,
            steps,
            sampler=partial(decoding.mirostat_v2, tau=tau),
            state=decoding.MirostatState.initial(tau, len(first), dtype=jnp.float64),
            eos_token=eos,
            pad_token=-1,
            row_ids=ids,
        )

    # Rows 16..18 repeat rows 5..7 with their row ids: they must generate the same tokens.
    first = jnp.arange(batch + 3, dtype=jnp.int32) % V
    first = first.at[batch:].set(first[5:8])
    ids = jnp.concatenate([jnp.arange(batch), jnp.arange(5, 8)])
    g = jax.jit(run)(jax.random.key(1), first, ids)
    np.testing.assert_array_equal(g.tokens[batch:], g.tokens[5:8])
    g = jax.tree.map(lambda a: a[:batch] if jnp.ndim(a) and a.shape[0] == batch + 3 else a, g)
    tokens, mask = np.asarray(g.tokens), np.asarray(g.mask)
    assert tokens.shape == (batch, steps) and g.metrics.mu.shape == (batch, steps)
    for b in range(batch):
        hits = np.flatnonzero(tokens[b] == eos)
        end = hits[0] + 1 if hits.size else steps
        assert mask[b, :end].all() and not mask[b, end:].any()
        assert (tokens[b, end:] == -1).all()
        # The state stops at the update of the EOS step (eta = 0.1).
        mu_final = g.metrics.mu[b, end - 1] - 0.1 * (g.metrics.surprise_bits[b, end - 1] - tau)
        np.testing.assert_allclose(g.state.mu[b], mu_final, rtol=1e-12)
    assert (tokens == eos).any() and not mask.all()
    assert int(g.carry[0]) == steps
    np.testing.assert_array_equal(g.carry[1][:, 1:], tokens[:, :-1])  # the cache saw every token


def test_entropy_switch_follows_the_rule():
    """Scripted entropies: the decisions of a plain-Python restatement of the rule."""
    rng = np.random.default_rng(10)
    steps, w, dwell, threshold = 40, 3, 2, 1.5
    # Model outputs with a known entropy per step: uniform over 2^h tokens (h bits).
    h_small = rng.choice([0.0, 1.0, 2.0, 3.0], size=steps)
    h_large = rng.choice([0.0, 1.0, 2.0], size=steps)

    def model(hs):
        table = jnp.where(jnp.arange(16) < (2.0 ** jnp.asarray(hs))[:, None], 0.0, -jnp.inf)
        return lambda c, tok: (table[c][None], c + 1)

    sw = decoding.entropy_switch(model(h_small), model(h_large), threshold, min_dwell=dwell)

    @jax.jit
    def run():
        def body(carry, _):
            _, carry, metrics = sw(carry, jnp.zeros(1, jnp.int32))
            return carry, metrics

        carry = (decoding.SwitchState.initial(1, window=w), 0, 0)
        return jax.lax.scan(body, carry, None, length=steps)[1]

    aux = jax.tree.map(lambda a: a.T, run())
    large, hist, count = False, [], 0
    for t in range(steps):
        assert bool(aux.large[0, t]) == large, t
        h = h_large[t] if large else h_small[t]
        np.testing.assert_allclose(aux.entropy_bits[0, t], h, atol=1e-12)
        hist.append(h)
        mean = np.mean(hist[-w:])
        np.testing.assert_allclose(aux.rolling_entropy_bits[0, t], mean, rtol=1e-6)
        count += 1
        if (mean > threshold) != large and count >= dwell:
            large, count = not large, 0
    assert aux.large.any() and not aux.large.all()
