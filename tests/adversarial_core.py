"""Adversarial cases for the core (entreg) and its NNX integration (entreg.nnx).

Rows of one array carry several edge cases at once (one compilation checks them all):
one-hot, -inf logits, +-1e4 logits, NaN in masked slots, fully masked rows.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from adversarial import Bad, Edge
from flax import nnx

import entreg

INF, NAN = np.inf, np.nan
F32, BF16, F16 = jnp.float32, jnp.bfloat16, jnp.float16

# [6, 4] logits: ordinary, one-hot, -inf entries, +1e4, -1e4 with a +1e4, all -inf.
LOGITS = np.array(
    [
        [0.3, -1.2, 2.0, 0.5],
        [0.0, -INF, -INF, -INF],
        [1.0, -INF, 0.5, -INF],
        [1e4, 0.0, -1e4, 3.0],
        [-1e4, -1e4, 1e4, -1e4],
        [-INF, -INF, -INF, -INF],
    ]
)
# The same rows with NaN wherever WHERE excludes the entry; WHERE also masks a whole row.
WHERE = np.array(
    [
        [True, True, False, True],
        [True, True, True, True],
        [True, False, True, True],
        [True, True, True, False],
        [False, False, False, False],
        [True, True, True, True],
    ]
)
GARBAGE = np.where(WHERE, LOGITS, NAN)
OTHER = np.array(
    [
        [1.0, 0.0, -1.0, 2.0],
        [-INF, 0.0, -INF, -INF],
        [0.0, 0.0, 0.0, 0.0],
        [3.0, 1e4, -2.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],
        [0.0, -INF, 1.0, 1.0],
    ]
)
OTHER_GARBAGE = np.where(WHERE, OTHER, NAN)
# Per-token values: finite where counted, NaN / inf padding elsewhere.
PADDING = np.where(np.arange(4) % 2, NAN, INF)
AGG_VALUES = np.where(WHERE, np.nan_to_num(OTHER, neginf=-5.0), PADDING)


def zero_on_masked_rows(out):
    """A fully masked row gives exactly 0."""
    assert float(np.asarray(out)[4]) == 0.0 and float(np.asarray(out)[5]) == 0.0


def categorical(fn, label_fn=None):
    """Cases for f(logits, *, where=None) reducing the last axis."""
    return [
        Edge("rows: one-hot, -inf, +-1e4, all -inf", fn, (LOGITS,), infinite_ok=False),
        Edge("NaN in masked slots, a fully masked row", lambda z: fn(z, where=WHERE), (GARBAGE,)),
        Edge("bf16 in, float32 out", fn, (jnp.asarray(LOGITS[:4], BF16),), dtype=F32),
        Edge("float16 in, float32 out", fn, (jnp.asarray(LOGITS[:4], F16),), dtype=F32),
        Edge("float64 stays float64", fn, (LOGITS[:4],), dtype=jnp.float64),
        Edge("empty batch", fn, (np.zeros((0, 4)),)),
        Edge("one category", fn, (np.array([[2.0], [-1e4]]),)),
    ]


def pairwise(fn, infinite_ok=True):
    """Cases for d(p_logits, q_logits, *, where=None)."""
    return [
        Edge("rows vs rows", fn, (LOGITS, OTHER), (0, 1), infinite_ok=infinite_ok),
        Edge(
            "NaN in masked slots",
            lambda p, q: fn(p, q, where=WHERE),
            (GARBAGE, OTHER_GARBAGE),
            (0, 1),
            infinite_ok=infinite_ok,
        ),
        Edge("p = q", lambda p: fn(p, p * 1.0), (LOGITS[:4],)),
        Edge(
            "bf16",
            fn,
            (jnp.asarray(LOGITS[:4], BF16), jnp.asarray(OTHER[:4], BF16)),
            (0, 1),
            infinite_ok=infinite_ok,
            dtype=F32,
        ),
        Edge("empty batch", fn, (np.zeros((0, 3)), np.zeros((0, 3))), (0, 1)),
    ]


def bad_logits(fn):
    return [
        Bad("integer logits", lambda: fn(np.zeros((2, 3), np.int32)), TypeError, "logits"),
        Bad("axis out of range", lambda: fn(np.zeros((2, 3)), axis=2), ValueError, "axis"),
        Bad("scalar", lambda: fn(np.float64(1.0)), ValueError, "logits"),
        Bad(
            "where not boolean",
            lambda: fn(np.zeros((2, 3)), where=np.ones((2, 3))),
            TypeError,
            "where",
        ),
        Bad(
            "where shape",
            lambda: fn(np.zeros((2, 3)), where=np.ones((3,), bool)),
            ValueError,
            "where",
        ),
    ]


def expect_log4(out):
    np.testing.assert_allclose(np.asarray(out, np.float64), math.log(4.0), rtol=1e-6)


# ----------------------------------------------------------------------------- spectral inputs
RNG = np.random.default_rng(0)
FEATURES = RNG.normal(size=(6, 3))
FEATURES_NAN = FEATURES.copy()
FEATURES_NAN[2] = NAN
ROWS = np.arange(6) != 2
DUPLICATED = np.repeat(FEATURES[:2], 3, axis=0)  # a degenerate spectrum
PSD = FEATURES @ FEATURES.T
KERNEL_NAN = np.where(
    np.outer(ROWS, ROWS), np.exp(-((FEATURES[:, None] - FEATURES) ** 2).sum(-1)), NAN
)


def rbf(a, b):
    return jnp.exp(-jnp.sum((a - b) ** 2))


# ------------------------------------------------------------------------ terms and composition
P_LOGITS = np.array([[0.0, 1.0, 2.0]])
Q_EXCLUDES = np.array([[0.0, -INF, 1.0]])  # KL(p || q) = +inf


def kl_measure(s):
    return entreg.kl_divergence(s["p"], Q_EXCLUDES).sum()


def term_on_infinite(make):
    """A term measuring a +inf KL: its value is inf, its contribution finite, no NaN gradient."""

    def fn(p):
        term = make()
        r = term({"p": p}, term.init(), 0)
        return r.loss, r.value

    return fn


def composed(*terms):
    def base(w):
        logits = w * jnp.array([[0.0, 1.0, 2.0]])
        return jnp.sum(w**2), {"p": logits, "logits": logits}

    return entreg.compose(base, *terms)


def compose_loss(w):
    f = composed(entreg.penalty("kl", kl_measure, 0.0), entreg.bonus("h", _mean_entropy, 0.1))
    loss, (state, metrics) = f(w, state=f.init(), step=0)
    return loss, metrics["kl/loss"], metrics["h/value"]


def _mean_entropy(s):
    return jnp.mean(entreg.entropy(s["logits"]))


# --------------------------------------------------------------------------------- attention
SCORES = RNG.normal(size=(2, 3, 5, 5))
SCORES_EXTREME = SCORES * 1e4
KEY_MASK = RNG.random((2, 1, 5, 5)) < 0.7
KEY_MASK[0, 0, 2] = False  # a query with no visible key
SCORES_GARBAGE = np.where(KEY_MASK, SCORES, NAN)


def attention_cases(fn):
    return [
        Edge("causal, +-1e4 scores", lambda s: fn(s, causal=True), (SCORES_EXTREME,)),
        Edge(
            "NaN at hidden keys, a row with no key",
            lambda s: fn(s, mask=KEY_MASK),
            (SCORES_GARBAGE,),
        ),
        Edge("sink", lambda s, k: fn(s, sink=k, causal=True), (SCORES, np.zeros((3, 1))), (0, 1)),
        Edge("bf16", lambda s: fn(s, causal=True), (jnp.asarray(SCORES, BF16),), dtype=F32),
        Edge("one key", fn, (np.ones((2, 1)),)),
    ]


def attention_bad(fn):
    return [
        Bad("1-d logits", lambda: fn(np.zeros(4)), ValueError, "logits"),
        Bad("mask shape", lambda: fn(SCORES, mask=np.ones((4,), bool)), ValueError, "mask"),
        Bad("mask dtype", lambda: fn(SCORES, mask=np.ones((5, 5))), TypeError, "mask"),
        Bad("sink shape", lambda: fn(SCORES, sink=np.zeros((7,))), ValueError, "sink"),
    ]


# ------------------------------------------------------------------------------------- NNX
def attention_module():
    return entreg.nnx.EntropyAttention(num_heads=2, in_features=4, rngs=nnx.Rngs(0), decode=False)


def nnx_forward(x):
    module = attention_module()
    y, inter = nnx.capture(module, nnx.Intermediate)(x, is_causal=True)
    return y, entreg.nnx.collect(inter, "attention_entropy")["attention_entropy"]


X_SEQ = RNG.normal(size=(2, 3, 4)) * 100.0


CASES = {
    # ----------------------------------------------------------------------- categorical
    "entreg.entropy": [
        *categorical(entreg.entropy),
        Edge(
            "fully masked rows give 0",
            lambda z: entreg.entropy(z, where=WHERE),
            (GARBAGE,),
            expect=zero_on_masked_rows,
        ),
        *bad_logits(entreg.entropy),
    ],
    "entreg.renyi_entropy": [
        *categorical(lambda z, **k: entreg.renyi_entropy(z, 2.0, **k)),
        *categorical(lambda z, **k: entreg.renyi_entropy(z, 0.9999, **k))[:2],
        Edge("order inf", lambda z: entreg.renyi_entropy(z, math.inf, where=WHERE), (GARBAGE,)),
        Edge("order 0", lambda z: entreg.renyi_entropy(z, 0.0, where=WHERE), (GARBAGE,)),
        Edge(
            "order 20, uniform: log 4",
            lambda z: entreg.renyi_entropy(z, 20.0),
            (np.zeros(4),),
            expect=expect_log4,
        ),
        Edge(
            "order 1e4, float32",
            lambda z: entreg.renyi_entropy(z, 1e4),
            (np.zeros(4, np.float32),),
            expect=expect_log4,
        ),
        Edge(
            "traced order",
            lambda z, a: entreg.renyi_entropy(z, a, where=WHERE),
            (GARBAGE, np.float64(1.5)),
            (0, 1),
        ),
        Bad("string order", lambda: entreg.renyi_entropy(LOGITS, "2"), TypeError, "order"),
        Bad("negative order", lambda: entreg.renyi_entropy(LOGITS, -1.0), ValueError, "order"),
        Bad("vector order", lambda: entreg.renyi_entropy(LOGITS, np.ones(2)), ValueError, "order"),
        *bad_logits(lambda z, **k: entreg.renyi_entropy(z, 2.0, **k)),
    ],
    "entreg.tsallis_entropy": [
        *categorical(lambda z, **k: entreg.tsallis_entropy(z, 1.0, **k)),
        Edge(
            "order 3, NaN in masked slots",
            lambda z: entreg.tsallis_entropy(z, 3.0, where=WHERE),
            (GARBAGE,),
        ),
        Edge("order inf", lambda z: entreg.tsallis_entropy(z, math.inf), (LOGITS,)),
        Bad("string order", lambda: entreg.tsallis_entropy(LOGITS, "2"), TypeError, "order"),
        Bad("nan order", lambda: entreg.tsallis_entropy(LOGITS, NAN), ValueError, "order"),
    ],
    "entreg.binary_entropy": [
        Edge("+-inf, +-1e4, 0", entreg.binary_entropy, (np.array([-INF, -1e4, 0.0, 1e4, INF]),)),
        Edge(
            "NaN where masked",
            lambda x: entreg.binary_entropy(x, where=np.array([False, True, False])),
            (np.array([NAN, 1.0, NAN]),),
        ),
        Edge("bf16", entreg.binary_entropy, (jnp.asarray([1.0, -3.0], BF16),), dtype=F32),
        Edge("empty", entreg.binary_entropy, (np.zeros((0,)),)),
        Bad("integer", lambda: entreg.binary_entropy(np.arange(3)), TypeError, "logit"),
        Bad(
            "where shape",
            lambda: entreg.binary_entropy(np.zeros(3), where=np.ones(4, bool)),
            ValueError,
            "where",
        ),
    ],
    "entreg.cross_entropy": [
        *pairwise(lambda p, q, **k: entreg.cross_entropy(q, p, **k)),
        Edge(
            "target probs with zeros",
            lambda z, t: entreg.cross_entropy(z, target_probs=t),
            (LOGITS[:4], np.array([[0.5, 0, 0.5, 0]] * 4)),
            (0, 1),
            infinite_ok=True,
        ),
        Bad(
            "both targets",
            lambda: entreg.cross_entropy(LOGITS, LOGITS, target_probs=LOGITS),
            ValueError,
            "target_logits",
        ),
        Bad(
            "target shape",
            lambda: entreg.cross_entropy(LOGITS, LOGITS[:2]),
            ValueError,
            "target_logits",
        ),
        Bad(
            "integer targets",
            lambda: entreg.cross_entropy(LOGITS, target_probs=np.ones((6, 4), int)),
            TypeError,
            "target_probs",
        ),
    ],
    "entreg.kl_divergence": [
        *pairwise(entreg.kl_divergence),
        Bad("shape", lambda: entreg.kl_divergence(LOGITS, OTHER[:2]), ValueError, "q_logits"),
        Bad(
            "dtype", lambda: entreg.kl_divergence(LOGITS, OTHER.astype(int)), TypeError, "q_logits"
        ),
    ],
    "entreg.js_divergence": [
        *pairwise(entreg.js_divergence, infinite_ok=False),
        Bad("shape", lambda: entreg.js_divergence(LOGITS, OTHER[:2]), ValueError, "q_logits"),
    ],
    "entreg.f_divergence": [
        *[
            edge
            for kind in ("reverse_kl", "js", "squared_hellinger", "total_variation", "chi2")
            for edge in pairwise(lambda p, q, kind=kind, **k: entreg.f_divergence(p, q, kind, **k))[
                :3
            ]
        ],
        *pairwise(lambda p, q, **k: entreg.f_divergence(p, q, "alpha", alpha=-0.5, **k))[:2],
        *pairwise(lambda p, q, **k: entreg.f_divergence(p, q, "alpha", alpha=2.0, **k))[:2],
        Edge(
            "total variation p = p: zero gradient, jit or not",
            lambda p: entreg.f_divergence(p, p * 1.0, "total_variation"),
            (RNG.normal(size=(3, 7)),),
            eager=True,
        ),
        Bad("kind", lambda: entreg.f_divergence(LOGITS, OTHER, "hellinger"), ValueError, "kind"),
        Bad(
            "alpha missing",
            lambda: entreg.f_divergence(LOGITS, OTHER, "alpha"),
            ValueError,
            "alpha",
        ),
        Bad(
            "alpha string",
            lambda: entreg.f_divergence(LOGITS, OTHER, "alpha", alpha="1"),
            TypeError,
            "alpha",
        ),
    ],
    "entreg.kl_estimate": [
        *[
            Edge(
                f"{kind}: +-inf and overflowing log-ratios",
                lambda a, b, kind=kind: entreg.kl_estimate(a, b, kind),
                (
                    np.array([-INF, 0.0, -INF, -800.0, 0.0, -3.0]),
                    np.array([-1.0, -INF, -INF, 0.0, 0.0, -1.0]),
                ),
                (0, 1),
                infinite_ok=True,
            )
            for kind in ("k1", "k2", "k3", "abs")
        ],
        Edge(
            "value clip on overflow",
            lambda a: entreg.kl_estimate(a, 0.0 * a, "k3", value_clip=10.0),
            (np.array([-100.0, 100.0, 0.5]),),
        ),
        Edge(
            "bf16",
            lambda a, b: entreg.kl_estimate(a, b),
            (jnp.asarray([-1.0, -2.0], BF16), jnp.asarray([-2.0, -1.0], BF16)),
            (0, 1),
            dtype=F32,
        ),
        Edge("empty", lambda a: entreg.kl_estimate(a, a), (np.zeros((2, 0)),)),
        Bad("kind", lambda: entreg.kl_estimate(np.zeros(3), np.zeros(3), "k4"), ValueError, "kind"),
        Bad("shape", lambda: entreg.kl_estimate(np.zeros(3), np.zeros(4)), ValueError, "log_q"),
        Bad(
            "negative clip",
            lambda: entreg.kl_estimate(np.zeros(3), np.zeros(3), log_ratio_clip=-1.0),
            ValueError,
            "log_ratio_clip",
        ),
        Bad(
            "integer", lambda: entreg.kl_estimate(np.zeros(3, int), np.zeros(3)), TypeError, "log_p"
        ),
    ],
    "entreg.aggregate": [
        *[
            Edge(
                f"{mode}: NaN / inf padding, empty sequences",
                lambda v, mode=mode: entreg.aggregate(v, WHERE, mode),
                (AGG_VALUES,),
            )
            for mode in (
                "token-mean",
                "seq-mean-token-sum",
                "seq-mean-token-mean",
                "seq-mean-token-sum-norm",
            )
        ],
        Edge(
            "all padding: 0",
            lambda v: entreg.aggregate(v, np.zeros((2, 3), bool)),
            (np.full((2, 3), NAN),),
            expect=lambda out: np.testing.assert_equal(float(out), 0.0),
        ),
        Edge(
            "zero normalizer: 0",
            lambda v: entreg.aggregate(
                v, np.ones((2, 3), bool), "seq-mean-token-sum-norm", norm_constant=0
            ),
            (np.ones((2, 3)),),
            expect=lambda out: np.testing.assert_equal(float(out), 0.0),
        ),
        Edge(
            "empty batch",
            lambda v: entreg.aggregate(v, np.zeros((0, 3), bool)),
            (np.zeros((0, 3)),),
        ),
        Edge(
            "bf16",
            lambda v: entreg.aggregate(v, np.ones((2, 3), bool)),
            (jnp.ones((2, 3), BF16),),
            dtype=F32,
        ),
        Bad(
            "mode",
            lambda: entreg.aggregate(np.zeros((2, 3)), np.ones((2, 3)), "mean"),
            ValueError,
            "mode",
        ),
        Bad(
            "mask shape",
            lambda: entreg.aggregate(np.zeros((2, 3)), np.ones((3,))),
            ValueError,
            "mask",
        ),
        Bad(
            "negative normalizer",
            lambda: entreg.aggregate(np.zeros((2, 3)), np.ones((2, 3)), num_tokens=-1),
            ValueError,
            "num_tokens",
        ),
        Bad("scalar values", lambda: entreg.aggregate(np.float64(1.0), True), ValueError, "values"),
    ],
    "entreg.score_entropy": [
        Edge(
            "NaN where excluded, zero and huge ratios",
            lambda s, r: entreg.score_entropy(
                s, r, where=~np.isnan(np.array([[0.0, 1, NAN], [1, NAN, 0]]))
            ),
            (
                np.array([[-30.0, 30.0, NAN], [0.0, NAN, -1e4]]),
                np.array([[0.0, 1e6, NAN], [2.0, NAN, 0.0]]),
            ),
            (0, 1),
        ),
        Edge(
            "zero score where the ratio is 0",
            entreg.score_entropy,
            (np.array([-INF, 0.5]), np.array([0.0, 1.0])),
            (0,),
        ),
        Edge(
            "zero score where the ratio is 1: +inf",
            entreg.score_entropy,
            (np.array([-INF, 0.5]), np.array([1.0, 1.0])),
            (0,),
            infinite_ok=True,
        ),
        Edge(
            "bf16", entreg.score_entropy, (jnp.zeros(3, BF16), jnp.ones(3, BF16)), (0, 1), dtype=F32
        ),
        Bad(
            "negative ratio",
            lambda: entreg.score_entropy(np.zeros(2), np.array([1.0, -1.0])),
            ValueError,
            "ratio",
        ),
        Bad("shape", lambda: entreg.score_entropy(np.zeros(2), np.zeros(3)), ValueError, "ratio"),
        Bad(
            "where dtype",
            lambda: entreg.score_entropy(np.zeros(2), np.zeros(2), where=np.ones(2)),
            TypeError,
            "where",
        ),
    ],
    "entreg.token_log_probs": [
        Edge(
            "tokens outside [0, V): -inf",
            lambda z: entreg.token_log_probs(z, np.array([0, -1, 4, 7, 2, 1])),
            (LOGITS,),
            infinite_ok=True,
            expect=lambda out: np.testing.assert_array_equal(np.asarray(out[0])[[1, 2, 3]], -INF),
        ),
        Edge(
            "NaN in excluded vocabulary",
            lambda z: entreg.token_log_probs(z, np.array([0, 0, 0, 0, 1, 0]), where=WHERE),
            (GARBAGE,),
            infinite_ok=True,
        ),
        Edge(
            "extreme temperatures",
            lambda z, t: entreg.token_log_probs(z[:4], np.array([0, 0, 2, 2]), temperature=t),
            (LOGITS, np.array([1e-4, 1e4, 1.0, 0.5])),
            (0, 1),
            infinite_ok=True,
        ),
        Edge(
            "bf16",
            lambda z: entreg.token_log_probs(z, np.array([0, 1])),
            (jnp.ones((2, 3), BF16),),
            dtype=F32,
        ),
        Bad(
            "float tokens", lambda: entreg.token_log_probs(LOGITS, np.zeros(6)), TypeError, "tokens"
        ),
        Bad(
            "token shape",
            lambda: entreg.token_log_probs(LOGITS, np.zeros(5, int)),
            ValueError,
            "tokens",
        ),
        Bad(
            "zero temperature",
            lambda: entreg.token_log_probs(LOGITS, np.zeros(6, int), temperature=0.0),
            ValueError,
            "temperature",
        ),
        Bad(
            "string temperature",
            lambda: entreg.token_log_probs(LOGITS, np.zeros(6, int), temperature="1"),
            TypeError,
            "temperature",
        ),
    ],
    "entreg.solve_temperature": [
        Edge(
            "+-1e4 and -inf rows, masked rows",
            lambda z: entreg.solve_temperature(
                z, 0.5, mask=np.array([True, True, True, True, False, False])
            )[0],
            (LOGITS,),
            (),
        ),
        Edge(
            "unreachable target", lambda z: entreg.solve_temperature(z, 10.0)[0], (LOGITS[:4],), ()
        ),
        Edge(
            "bf16", lambda z: entreg.solve_temperature(z, 0.5), (jnp.asarray(LOGITS[:4], BF16),), ()
        ),
        Bad(
            "bounds",
            lambda: entreg.solve_temperature(LOGITS, 1.0, bounds=(2.0, 1.0)),
            ValueError,
            "bounds",
        ),
        Bad("iters", lambda: entreg.solve_temperature(LOGITS, 1.0, iters=0), ValueError, "iters"),
        Bad(
            "mask shape",
            lambda: entreg.solve_temperature(LOGITS, 1.0, mask=np.ones(3, bool)),
            ValueError,
            "mask",
        ),
    ],
    # ----------------------------------------------------------------------------- attention
    "entreg.attention_entropy": [
        *attention_cases(entreg.attention_entropy),
        Edge(
            "normalized",
            lambda s: entreg.attention_entropy(s, mask=KEY_MASK, normalize=True),
            (SCORES_GARBAGE,),
        ),
        *attention_bad(entreg.attention_entropy),
    ],
    "entreg.effective_keys": [
        *attention_cases(entreg.effective_keys),
        *attention_bad(entreg.effective_keys)[:1],
    ],
    "entreg.attention_sink_mass": [
        *attention_cases(entreg.attention_sink_mass),
        *attention_bad(entreg.attention_sink_mass)[:1],
    ],
    "entreg.head_entropy_fractions": [
        Edge(
            "values at the thresholds",
            entreg.head_entropy_fractions,
            (np.array([[0.0, 0.1, 0.9, 1.0], [0.5, 0.5, 0.5, 0.5]]),),
            (),
        ),
        Edge("one head", entreg.head_entropy_fractions, (np.array([[0.05]]),), ()),
        Bad(
            "no heads",
            lambda: entreg.head_entropy_fractions(np.zeros((2, 0))),
            ValueError,
            "normalized_entropy",
        ),
        Bad(
            "thresholds",
            lambda: entreg.head_entropy_fractions(
                np.zeros(3), collapse_below=0.9, overload_above=0.1
            ),
            ValueError,
            "collapse_below",
        ),
        Bad("axis", lambda: entreg.head_entropy_fractions(np.zeros(3), axis=1), ValueError, "axis"),
    ],
    "entreg.entropy_lower_bound": [
        Edge(
            "sigma from 0 to 1e4",
            lambda s: entreg.entropy_lower_bound(s, 50),
            (np.array([0.0, 1e-8, 2.0, 80.0, 1e4]),),
        ),
        Edge("two keys", lambda s: entreg.entropy_lower_bound(s, 2), (np.array([0.0, 3.0]),)),
        Edge(
            "float32", lambda s: entreg.entropy_lower_bound(s, 10**6), (np.float32(1e3),), dtype=F32
        ),
        Bad("one key", lambda: entreg.entropy_lower_bound(2.0, 1), ValueError, "length"),
        Bad("float length", lambda: entreg.entropy_lower_bound(2.0, 3.5), ValueError, "length"),
        Bad(
            "integer sigma", lambda: entreg.entropy_lower_bound(np.arange(3), 4), TypeError, "sigma"
        ),
    ],
    # ------------------------------------------------------------------------------ spectral
    "entreg.spectral_entropy": [
        Edge(
            "zeros, negative round-off, tiny, huge",
            lambda lam, q=q: entreg.spectral_entropy(lam, order=q),
            (
                np.array(
                    [[0.0, 0.0, 0.0], [1.0, -1e-17, 0.0], [1e-30, 2e-30, 3e-30], [1e30, 1e30, 0.0]]
                ),
            ),
        )
        for q in (1.0, 0.5, 2.0, math.inf, 0.0)
    ]
    + [
        Edge(
            "float32 tiny", entreg.spectral_entropy, (np.array([1e-30, 2e-30, 3e-30], np.float32),)
        ),
        Edge("bf16", entreg.spectral_entropy, (jnp.ones(3, BF16),), dtype=F32),
        Bad("order", lambda: entreg.spectral_entropy(np.ones(3), order=-1.0), ValueError, "order"),
        Bad("eps", lambda: entreg.spectral_entropy(np.ones(3), eps=2.0), ValueError, "eps"),
        Bad("base", lambda: entreg.spectral_entropy(np.ones(3), base=1.0), ValueError, "base"),
    ],
    "entreg.matrix_entropy": [
        Edge(
            f"identity, zero, rank one, tiny (order {q})",
            lambda m, q=q: entreg.matrix_entropy(m, order=q),
            (
                np.stack(
                    [np.eye(3), np.zeros((3, 3)), np.ones((3, 3)), 1e-20 * np.diag([1.0, 2, 3])]
                ),
            ),
        )
        for q in (1.0, 2.0, 0.5, math.inf)
    ]
    + [
        Edge("float32 tiny", entreg.matrix_entropy, (1e-18 * np.eye(3, dtype=np.float32),)),
        Bad("not square", lambda: entreg.matrix_entropy(np.ones((2, 3))), ValueError, "matrix"),
        Bad(
            "eps with order 2",
            lambda: entreg.matrix_entropy(np.eye(2), order=2, eps=2.0),
            ValueError,
            "eps",
        ),
    ],
    "entreg.joint_matrix_entropy": [
        Edge(
            "identity and rank one",
            entreg.joint_matrix_entropy,
            (np.eye(3), np.ones((3, 3))),
            (0, 1),
        ),
        Bad("shapes", lambda: entreg.joint_matrix_entropy(np.eye(3), np.eye(2)), ValueError, "b"),
    ],
    "entreg.matrix_mutual_information": [
        Edge(
            "identity and rank one",
            entreg.matrix_mutual_information,
            (np.eye(3), np.ones((3, 3))),
            (0, 1),
        ),
        Edge(
            "zero matrices",
            entreg.matrix_mutual_information,
            (np.zeros((2, 2)), np.zeros((2, 2))),
            (0, 1),
        ),
        Bad(
            "not square",
            lambda: entreg.matrix_mutual_information(np.ones((2, 3)), np.ones((2, 3))),
            ValueError,
            "a",
        ),
    ],
    "entreg.effective_rank": [
        Edge(
            "zero, duplicated rows",
            entreg.effective_rank,
            (np.stack([np.zeros((6, 3)), DUPLICATED]),),
        ),
        Edge("N < d", entreg.effective_rank, (FEATURES.T,)),
        Bad("1-d", lambda: entreg.effective_rank(np.ones(3)), ValueError, "matrix"),
    ],
    "entreg.von_neumann_entropy": [
        Edge(
            "NaN in a masked row",
            lambda x: entreg.von_neumann_entropy(x, where=ROWS),
            (FEATURES_NAN,),
        ),
        Edge(
            "duplicated rows, zero rows",
            entreg.von_neumann_entropy,
            (np.stack([DUPLICATED, np.zeros((6, 3))]),),
        ),
        Edge(
            "tiny, unnormalized",
            lambda x: entreg.von_neumann_entropy(1e-12 * x, normalize=False),
            (FEATURES,),
        ),
        Edge(
            "order 2",
            lambda x: entreg.von_neumann_entropy(x, order=2.0, where=ROWS),
            (FEATURES_NAN,),
        ),
        Edge("bf16", entreg.von_neumann_entropy, (jnp.asarray(FEATURES, BF16),), dtype=F32),
        Bad(
            "where shape",
            lambda: entreg.von_neumann_entropy(FEATURES, where=np.ones(4, bool)),
            ValueError,
            "where",
        ),
        Bad("1-d", lambda: entreg.von_neumann_entropy(np.ones(3)), ValueError, "features"),
    ],
    "entreg.vendi_score": [
        Edge(
            "NaN in a zero-weight row",
            lambda x, w: entreg.vendi_score(x, weights=w),
            (FEATURES_NAN, ROWS * 1.0),
            (0, 1),
        ),
        Edge(
            "zero weights, N < d",
            lambda x, w: entreg.vendi_score(x, weights=w),
            (FEATURES.T, np.array([1.0, 0.0, 2.0])),
            (0, 1),
        ),
        Edge(
            "kernel, NaN in a zero-weight row",
            lambda x, w: entreg.vendi_score(x, kernel=rbf, weights=w),
            (FEATURES_NAN, ROWS * 1.0),
            (0, 1),
        ),
        Edge(
            "identical samples, order 0.5",
            lambda x: entreg.vendi_score(x, order=0.5),
            (DUPLICATED,),
        ),
        Bad(
            "kernel not callable",
            lambda: entreg.vendi_score(FEATURES, kernel=3),
            TypeError,
            "kernel",
        ),
        Bad(
            "negative weight",
            lambda: entreg.vendi_score(FEATURES, weights=-np.ones(6)),
            ValueError,
            "weights",
        ),
    ],
    "entreg.log_vendi_score": [
        Edge(
            "NaN in a zero-weight row",
            lambda x, w: entreg.log_vendi_score(x, weights=w, order=2.0),
            (FEATURES_NAN, ROWS * 1.0),
            (0, 1),
        ),
        Edge("order inf", lambda x: entreg.log_vendi_score(x, order=math.inf), (DUPLICATED,)),
        Bad(
            "weights shape",
            lambda: entreg.log_vendi_score(FEATURES, weights=np.ones(2)),
            ValueError,
            "weights",
        ),
    ],
    "entreg.vendi_score_from_kernel": [
        Edge(
            "NaN entries of zero-weight samples",
            lambda k, w: entreg.vendi_score_from_kernel(k, weights=w),
            (KERNEL_NAN, ROWS * 1.0),
            (0, 1),
        ),
        Edge(
            "zero weight, exact gradient",
            lambda w: entreg.vendi_score_from_kernel(
                np.full((3, 3), 0.5) + 0.5 * np.eye(3), weights=w
            ),
            (np.array([1.0, 0.0, 2.0]),),
        ),
        Edge(
            "rank one, order 2",
            lambda k: entreg.vendi_score_from_kernel(k, order=2.0),
            (np.ones((4, 4)),),
        ),
        Bad(
            "not square",
            lambda: entreg.vendi_score_from_kernel(np.ones((2, 3))),
            ValueError,
            "kernel_matrix",
        ),
    ],
    "entreg.log_vendi_score_from_kernel": [
        Edge(
            "NaN entries of zero-weight samples",
            lambda k, w: entreg.log_vendi_score_from_kernel(k, weights=w),
            (KERNEL_NAN, ROWS * 1.0),
            (0, 1),
        ),
        Bad(
            "weights shape",
            lambda: entreg.log_vendi_score_from_kernel(np.eye(3), weights=np.ones(2)),
            ValueError,
            "weights",
        ),
    ],
    "entreg.diffusion_spectral_entropy": [
        Edge(
            "NaN in a masked row",
            lambda x: entreg.diffusion_spectral_entropy(x, sigma=1.0, where=ROWS),
            (FEATURES_NAN,),
        ),
        Edge(
            "constant data, trivial eigenvalue dropped: 0",
            lambda x: entreg.diffusion_spectral_entropy(x, sigma=1.0, drop_trivial=True),
            (np.ones((5, 2)),),
            # allclose: an entropy of -0.0 is 0.
            expect=lambda out: np.testing.assert_allclose(float(out), 0.0, rtol=0, atol=0),
        ),
        Edge(
            "duplicated points, t = 0.5",
            lambda x: entreg.diffusion_spectral_entropy(x, sigma=1.0, t=0.5),
            (DUPLICATED,),
        ),
        Edge(
            "tiny bandwidth",
            lambda x: entreg.diffusion_spectral_entropy(x, sigma=1e-3),
            (FEATURES,),
        ),
        Bad(
            "sigma",
            lambda: entreg.diffusion_spectral_entropy(FEATURES, sigma=0.0),
            ValueError,
            "sigma",
        ),
        Bad("t", lambda: entreg.diffusion_spectral_entropy(FEATURES, t=-1.0), ValueError, "t"),
        Bad(
            "batch",
            lambda: entreg.diffusion_spectral_entropy(np.ones((2, 3, 4))),
            ValueError,
            "features",
        ),
    ],
    "entreg.diffusion_spectral_mutual_information": [
        Edge(
            "NaN in a masked row, an empty class",
            lambda x: entreg.diffusion_spectral_mutual_information(
                jax.random.key(0),
                x,
                np.array([0, 0, 1, 1, 0, 1]),
                num_classes=3,
                sigma=1.0,
                where=ROWS,
                repetitions=2,
            ),
            (FEATURES_NAN,),
        ),
        Bad(
            "labels out of range",
            lambda: entreg.diffusion_spectral_mutual_information(
                jax.random.key(0), FEATURES, np.arange(6), num_classes=3
            ),
            ValueError,
            "labels",
        ),
        Bad(
            "float labels",
            lambda: entreg.diffusion_spectral_mutual_information(
                jax.random.key(0), FEATURES, np.zeros(6), num_classes=3
            ),
            ValueError,
            "labels",
        ),
        Bad(
            "repetitions",
            lambda: entreg.diffusion_spectral_mutual_information(
                jax.random.key(0), FEATURES, np.zeros(6, int), num_classes=3, repetitions=0
            ),
            ValueError,
            "repetitions",
        ),
    ],
    "entreg.stochastic_spectral_entropy": [
        Edge(
            f"breakdown: {name}",
            lambda s, a=a: entreg.stochastic_spectral_entropy(
                jax.random.key(0), lambda v: s * (a @ v), 6, num_probes=4
            ),
            (np.float64(1.0),),
        )
        for name, a in [
            ("identity", np.eye(6)),
            ("rank one", np.ones((6, 6))),
            ("zero", np.zeros((6, 6))),
            ("low rank + cI", PSD + 0.1 * np.eye(6)),
            ("zero diagonal entries", np.diag([0, 1.0, 0, 2, 0, 3])),
        ]
    ]
    + [
        Bad(
            "order 0",
            lambda: entreg.stochastic_spectral_entropy(
                jax.random.key(0), lambda v: v, 3, order=0.0
            ),
            ValueError,
            "order",
        ),
        Bad(
            "one probe",
            lambda: entreg.stochastic_spectral_entropy(
                jax.random.key(0), lambda v: v, 3, num_probes=1
            ),
            ValueError,
            "num_probes",
        ),
        Bad(
            "matvec",
            lambda: entreg.stochastic_spectral_entropy(jax.random.key(0), 3, 3),
            TypeError,
            "matvec",
        ),
    ],
    # ------------------------------------------------------------------ terms and composition
    "entreg.penalty": [
        Edge(
            "weight 0 on a +inf measurement",
            term_on_infinite(lambda: entreg.penalty("kl", kl_measure, 0.0)),
            (P_LOGITS,),
            infinite_ok=True,
        ),
        Bad(
            "negative weight", lambda: entreg.penalty("kl", kl_measure, -1.0), ValueError, "weight"
        ),
        Bad("name", lambda: entreg.penalty("a/b", kl_measure), ValueError, "name"),
    ],
    "entreg.bonus": [
        Edge(
            "weight 0 on a +inf measurement",
            term_on_infinite(lambda: entreg.bonus("kl", kl_measure, 0.0)),
            (P_LOGITS,),
            infinite_ok=True,
        ),
        Bad("weight string", lambda: entreg.bonus("kl", kl_measure, "1"), TypeError, "weight"),
    ],
    "entreg.constraint": [
        Edge(
            "multiplier 0 on a +inf measurement",
            term_on_infinite(lambda: entreg.constraint("kl", kl_measure, upper=1.0, lr=0.1)),
            (P_LOGITS,),
            infinite_ok=True,
        ),
        Bad(
            "both bounds",
            lambda: entreg.constraint("c", kl_measure, lower=0.0, upper=1.0, lr=0.1),
            ValueError,
            "lower",
        ),
        Bad(
            "negative lr",
            lambda: entreg.constraint("c", kl_measure, lower=0.0, lr=-1.0),
            ValueError,
            "lr",
        ),
    ],
    "entreg.band_penalty": [
        Edge(
            "weight 0 on a +inf measurement",
            term_on_infinite(lambda: entreg.band_penalty("kl", kl_measure, weight=0.0)),
            (P_LOGITS,),
            infinite_ok=True,
        ),
        Bad(
            "high < low",
            lambda: entreg.band_penalty("b", kl_measure, low=2.0, high=1.0),
            ValueError,
            "high",
        ),
        Bad("decay", lambda: entreg.band_penalty("b", kl_measure, decay=1.0), ValueError, "decay"),
    ],
    "entreg.ema_metric": [
        Edge(
            "+inf measurement",
            term_on_infinite(lambda: entreg.ema_metric("kl", kl_measure)),
            (P_LOGITS,),
            infinite_ok=True,
        ),
        Bad("decay", lambda: entreg.ema_metric("e", kl_measure, decay=-0.5), ValueError, "decay"),
    ],
    "entreg.LossTerm": [
        Edge(
            "direct construction",
            lambda p: (
                entreg.LossTerm(
                    "t",
                    init=lambda: (),
                    apply=lambda s, st, k: entreg.TermResult(
                        s["p"].sum(), 1.0, s["p"].sum(), st, {}
                    ),
                )({"p": p}, ()).loss
            ),
            (P_LOGITS,),
        ),
    ],
    "entreg.LossTerm.__call__": [
        Edge(
            "scale 0 on a +inf measurement",
            term_on_infinite(lambda: 0.0 * entreg.penalty("kl", kl_measure)),
            (P_LOGITS,),
            infinite_ok=True,
        ),
    ],
    "entreg.LossTerm.__mul__": [
        Edge(
            "scaled",
            term_on_infinite(lambda: entreg.penalty("h", _mean_entropy_p) * 3.0),
            (P_LOGITS,),
        ),
        Bad(
            "negative factor", lambda: entreg.penalty("h", kl_measure) * -1.0, ValueError, "factor"
        ),
        Bad("string factor", lambda: entreg.penalty("h", kl_measure) * "2", TypeError, "factor"),
    ],
    "entreg.LossTerm.disabled": [
        Edge(
            "disabled term",
            lambda w: composed(entreg.penalty("kl", kl_measure).disabled())(w, state={"kl": ()})[0],
            (np.float64(1.5),),
        ),
    ],
    "entreg.TermResult": [
        Edge("fields", lambda v: entreg.TermResult(v, 1.0, 2.0 * v, (), {})[2], (np.float64(1.0),)),
    ],
    "entreg.ConstraintState": [
        Edge("fields", lambda m: entreg.ConstraintState(m).multiplier * 2, (np.float64(1.0),)),
    ],
    "entreg.BandState": [
        Edge(
            "fields", lambda r: entreg.BandState(r, jnp.int32(1)).reference * 2, (np.float64(1.0),)
        ),
    ],
    "entreg.EmaState": [
        Edge("fields", lambda m: entreg.EmaState(m, jnp.int32(1)).mean * 2, (np.float64(1.0),)),
    ],
    "entreg.compose": [
        Edge("a +inf term switched off, a schedule", compose_loss, (np.float64(1.5),)),
        Bad("non-term", lambda: entreg.compose(lambda w: (w, {}), "term"), TypeError, "terms"),
        Bad("base not callable", lambda: entreg.compose(3), TypeError, "base"),
        Bad(
            "duplicate names",
            lambda: entreg.compose(
                lambda w: (w, {}), entreg.penalty("a", kl_measure), entreg.bonus("a", kl_measure)
            ),
            ValueError,
            "terms",
        ),
    ],
    "entreg.ComposedLoss": [
        Edge(
            "direct construction",
            lambda w: entreg.ComposedLoss(lambda w: (w**2, {}), ())(w, state={})[0],
            (np.float64(2.0),),
        ),
        Bad("non-term", lambda: entreg.ComposedLoss(lambda w: (w, {}), (3,)), TypeError, "terms"),
    ],
    "entreg.ComposedLoss.__call__": [
        Edge("+inf term with weight 0", compose_loss, (np.float64(-3.0),)),
        Bad(
            "missing state",
            lambda: composed(entreg.penalty("kl", kl_measure))(1.0, state={}),
            ValueError,
            "state",
        ),
    ],
    "entreg.ComposedLoss.__add__": [
        Edge(
            "added term",
            lambda w: (composed() + entreg.bonus("h", _mean_entropy, 0.5))(w, state={"h": ()})[0],
            (np.float64(1.0),),
        ),
        Bad("non-term", lambda: composed() + 3, TypeError, "terms"),
    ],
    "entreg.ComposedLoss.init": [
        Edge(
            "states",
            lambda w: (
                composed(entreg.constraint("c", _mean_entropy, lower=1.0, lr=0.1))
                .init()["c"]
                .multiplier
                + w
            ),
            (np.float64(1.0),),
        ),
    ],
    "entreg.ComposedLoss.without": [
        Edge(
            "removed term",
            lambda w: composed(entreg.penalty("kl", kl_measure)).without("kl")(w, state={})[0],
            (np.float64(1.0),),
        ),
        Bad("unknown name", lambda: composed().without("x"), ValueError, "name"),
    ],
    # --------------------------------------------------------------------------------- NNX
    "entreg.nnx.EntropyAttention": [
        Edge("+-1e2 inputs, causal", nnx_forward, (X_SEQ,), jit=False),
        Bad(
            "attention_fn",
            lambda: entreg.nnx.EntropyAttention(
                num_heads=2, in_features=4, rngs=nnx.Rngs(0), attention_fn=None
            ),
            TypeError,
            "attention_fn",
        ),
    ],
    "entreg.nnx.EntropyAttention.__call__": [
        Edge(
            "bf16 inputs",
            lambda x: attention_module()(x, is_causal=True),
            (jnp.asarray(X_SEQ, BF16),),
            jit=False,
        ),
    ],
    "entreg.nnx.entropy_attention_fn": [
        Edge(
            "a query with no visible key, NaN-free output",
            lambda q: entreg.nnx.entropy_attention_fn(
                q,
                q,
                q,
                mask=np.tril(np.ones((3, 3), bool))[None] & np.array([False, True, True])[:, None],
            ),
            (RNG.normal(size=(2, 3, 2, 4)) * 1e2,),
        ),
    ],
    "entreg.nnx.collect": [
        Edge("sown entropies", lambda x: nnx_forward(x)[1], (X_SEQ,), jit=False),
        Bad(
            "nothing sown",
            lambda: entreg.nnx.collect(nnx.State({}), "attention_entropy"),
            ValueError,
            "names",
        ),
    ],
}


def _mean_entropy_p(s):
    return jnp.mean(entreg.entropy(s["p"]))
