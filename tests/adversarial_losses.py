"""Adversarial cases for the training-loss terms (entreg.losses)."""

import jax
import jax.numpy as jnp
import numpy as np
from adversarial import Bad, Edge
from flax import nnx

from entreg import losses

INF, NAN = np.inf, np.nan
BF16, F32 = jnp.bfloat16, jnp.float32
RNG = np.random.default_rng(1)

# ------------------------------------------------------------------------------ policy batches
# [3, 5] tokens: row 0 ordinary, row 1 padded from t = 2 (NaN / -inf in the padding, as
# token_log_probs returns for excluded tokens), row 2 all padding.
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], bool)
LP = np.where(MASK, np.log(RNG.uniform(0.05, 1.0, (3, 5))), -INF)
OLP = np.where(MASK, LP + RNG.normal(0, 0.3, (3, 5)), NAN)
ADV = np.where(MASK, RNG.normal(size=(3, 5)), NAN)
ENT = np.where(MASK, RNG.uniform(0.1, 2.0, (3, 5)), NAN)
REF = np.where(MASK, LP - 0.1, -INF)
EXTREME_LP = np.array([[-1e4, 0.0, -30.0, -1e-9, -3.0]])  # ratios far outside any clip
EXTREME_OLP = np.array([[0.0, -1e4, -1.0, -1e-9, 50.0]])
POLICY_ARGS = (LP, OLP, ADV, MASK)
EMPTY = (np.zeros((2, 0)), np.zeros((2, 0)), np.zeros((2, 0)), np.zeros((2, 0), bool))


def policy_edges(fn, **kw):
    """Garbage padding and an all-padding row; extreme log-ratios; an empty batch."""
    return [
        Edge(
            "NaN / -inf padding, an all-padding row",
            lambda lp: fn(lp, *POLICY_ARGS[1:], **kw)[0],
            (LP,),
        ),
        Edge(
            "extreme log-ratios",
            lambda lp: fn(
                lp,
                EXTREME_OLP,
                np.array([[1.0, -1.0, 2.0, -2.0, 0.5]]),
                np.ones((1, 5), bool),
                **kw,
            )[0],
            (EXTREME_LP,),
        ),
        Edge("empty batch", lambda lp: fn(lp, *EMPTY[1:], **kw)[0], (EMPTY[0],)),
        Edge(
            "bf16 inputs",
            lambda lp: fn(
                lp, *(jnp.asarray(np.nan_to_num(x), BF16) for x in POLICY_ARGS[1:3]), MASK, **kw
            )[0],
            (jnp.asarray(np.nan_to_num(LP, neginf=0.0), BF16),),
            dtype=F32,
        ),
    ]


def policy_bads(fn, **kw):
    return [
        Bad("shape", lambda: fn(LP, OLP[:2], ADV, MASK, **kw), ValueError, "old_log_prob"),
        Bad("mask shape", lambda: fn(LP, OLP, ADV, MASK[:2], **kw), ValueError, "mask"),
        Bad(
            "integer log_prob",
            lambda: fn(LP.astype(int), OLP, ADV, MASK, **kw),
            TypeError,
            "log_prob",
        ),
        Bad("scalar", lambda: fn(1.0, 1.0, 1.0, True, **kw), ValueError, "log_prob"),
    ]


def policy_signals(lp):
    return {
        "log_prob": lp,
        "old_log_prob": OLP,
        "advantages": ADV,
        "mask": MASK,
        "entropy": ENT,
        "key": jax.random.key(0),
    }


def run_term(term, signals, step=0):
    r = term(signals, term.init(), step)
    return r.loss, r.value


# --------------------------------------------------------------------------------------- SEDD
ABS, UNI = losses.AbsorbingGraph(3), losses.UniformGraph(3)
LOGLIN, GEO = losses.LogLinearNoise(), losses.GeometricNoise()
X0 = np.array([[0, 1, 2, 0], [2, 2, 1, 0]])
XT_ABS = np.array([[3, 1, 3, 0], [3, 3, 3, 3]])
XT_UNI = np.array([[1, 1, 0, 0], [2, 0, 1, 1]])
SIGMAS = np.array([0.0, 1e-6, 1.0, 89.0, 200.0])  # zero, tiny, ordinary, overflowing e^sigma
SEQ_MASK = np.array([[1, 1, 1, 0], [0, 0, 0, 0]], bool)


def position_model(dim):
    w = RNG.normal(size=(dim, dim))

    def model_fn(xt, sigma):
        return jnp.asarray(w)[xt] * jnp.log1p(sigma)[:, None, None]

    return model_fn


def graph_edges(graph, xt):
    dim = graph.dim
    sig = SIGMAS[:, None]  # [5, 1] against tokens [4]
    x0, xt1 = X0[0], xt[0]
    x05, xt5 = (np.broadcast_to(x, (5, 4)) for x in (x0, xt1))
    log_score = RNG.normal(size=(5, 4, dim))
    name = type(graph).__name__
    return {
        f"entreg.losses.{name}": [
            Edge(
                "construct",
                lambda s: type(graph)(4).transition(np.array([0]), s),
                (np.array([0.5]),),
            )
        ],
        f"entreg.losses.{name}.transition": [
            Edge("sigma from 0 to 200", lambda s: graph.transition(x0, s), (sig,)),
            Bad(
                "token out of range",
                lambda: graph.transition(np.array([dim]), 1.0),
                ValueError,
                "x0",
            ),
            Bad("float tokens", lambda: graph.transition(np.array([0.5]), 1.0), TypeError, "x0"),
        ],
        f"entreg.losses.{name}.sample_transition": [
            Edge(
                "sigma from 0 to 200",
                lambda s: graph.sample_transition(jax.random.key(0), x0, s),
                (sig,),
                (),
            ),
            Bad(
                "sigma shape",
                lambda: graph.sample_transition(jax.random.key(0), X0, np.ones(3)),
                ValueError,
                "sigma",
            ),
        ],
        f"entreg.losses.{name}.rate_weights": [
            Edge("every token", lambda: graph.rate_weights(np.arange(dim)), (), ()),
            Bad("token out of range", lambda: graph.rate_weights(np.array([-1])), ValueError, "xt"),
        ],
        f"entreg.losses.{name}.ratios": [
            Edge("sigma 0 to 200", lambda s: graph.ratios(x0, xt1, s), (sig,), infinite_ok=True),
            Bad("xt out of range", lambda: graph.ratios(x0, xt1 + 9, 1.0), ValueError, "xt"),
        ],
        f"entreg.losses.{name}.score_entropy": [
            Edge(
                "sigma from 0 to 200, extreme scores",
                lambda s, sg: graph.score_entropy(s, xt5, x05, sg),
                (log_score * 30, sig),
                (0, 1),
                infinite_ok=True,  # sigma = 0 at a masked position is impossible: +inf
            ),
            Bad(
                "log_score shape",
                lambda: graph.score_entropy(log_score[..., :2], xt1, x0, 1.0),
                ValueError,
                "log_score",
            ),
        ],
        f"entreg.losses.{name}.log_score": [
            Edge(
                "sigma from 0 to 200",
                lambda o, s: graph.log_score(o, np.broadcast_to(xt1, (5, 4)), s),
                (log_score, sig),
                (0, 1),
            ),
        ],
        f"entreg.losses.{name}.staggered_score": [
            Edge(
                "dsigma 0 to 20",
                # Weighted: the plain sum of the outputs does not depend on dsigma, and its
                # gradient would be round-off of e^20-sized terms.
                lambda sc, d: graph.staggered_score(sc, d) * np.arange(1.0, dim + 1),
                (np.exp(log_score[:4]), np.array([[0.0], [1e-6], [1.0], [20.0]])),
                (0, 1),
            ),
        ],
        f"entreg.losses.{name}.transp_transition": [
            Edge("dsigma 0 to 200", lambda d: graph.transp_transition(xt1, d), (sig,)),
            Bad(
                "xt out of range",
                lambda: graph.transp_transition(np.array([dim]), 1.0),
                ValueError,
                "xt",
            ),
        ],
        f"entreg.losses.{name}.sample_prior": [
            Edge("a batch", lambda: graph.sample_prior(jax.random.key(0), (2, 3), 5.0), (), ()),
        ],
        f"entreg.losses.{name}.prior_kl": [
            Edge("sigma from 0 to 200", lambda s: graph.prior_kl(x0, s), (sig,)),
        ],
        f"entreg.losses.{name}.reverse_rate": [
            Edge("extreme scores", lambda s: graph.reverse_rate(s, xt1), (log_score[0] * 30,)),
            Bad(
                "xt out of range",
                lambda: graph.reverse_rate(log_score[0], xt1 - 5),
                ValueError,
                "xt",
            ),
        ],
    }


def noise_edges(noise):
    name = type(noise).__name__
    t = np.array([0.0, 1e-6, 0.5, 1.0])
    return {
        f"entreg.losses.{name}": [Edge("construct", lambda t: type(noise)()(t)[0], (t,))],
        f"entreg.losses.{name}.total": [
            Edge("t in [0, 1]", noise.total, (t,)),
            Bad("integer t", lambda: noise.total(np.arange(2)), TypeError, "t"),
        ],
        f"entreg.losses.{name}.rate": [Edge("t in [0, 1]", noise.rate, (t,))],
        f"entreg.losses.{name}.__call__": [Edge("t in [0, 1]", noise, (t,))],
    }


MODEL3, MODEL4 = position_model(3), position_model(4)


# ------------------------------------------------------------------------------- attention terms
H_LAYER = RNG.uniform(0, 2, (2, 3, 6))  # [batch, heads, Tq]
ROW_MASK = np.ones((2, 3, 6), bool)
ROW_MASK[1] = False
H_GARBAGE = np.where(ROW_MASK, H_LAYER, NAN)


def sigma_layer(x, kernel_init=nnx.initializers.zeros, gamma_init="spectral"):
    layer = losses.SigmaReparamLinear(
        3, 2, kernel_init=kernel_init, gamma_init=gamma_init, rngs=nnx.Rngs(0)
    )
    return layer(x)


CASES = {
    # ---------------------------------------------------------------------------- policy losses
    "entreg.losses.ppo_loss": [
        *policy_edges(
            losses.ppo_loss,
            entropy=ENT,
            entropy_coef=0.01,
            ref_log_prob=REF,
            kl_coef=0.1,
            kl_kind="k2",
        )[:1],
        *policy_edges(losses.ppo_loss)[1:],
        Edge(
            "k3 KL with -inf padding",
            lambda lp: losses.ppo_loss(
                lp,
                OLP,
                ADV,
                MASK,
                ref_log_prob=REF,
                kl_coef=0.1,
                kl_kind="k3",
                token_weights=np.where(MASK, 1.0, NAN),
            )[0],
            (LP,),
        ),
        *policy_bads(losses.ppo_loss),
        Bad(
            "dual clip",
            lambda: losses.ppo_loss(*POLICY_ARGS, dual_clip=1.0),
            ValueError,
            "dual_clip",
        ),
        Bad("eps_low", lambda: losses.ppo_loss(*POLICY_ARGS, eps_low=2.0), ValueError, "eps_low"),
        Bad(
            "entropy shape",
            lambda: losses.ppo_loss(*POLICY_ARGS, entropy=ENT[:1], entropy_coef=0.1),
            ValueError,
            "entropy",
        ),
        Bad(
            "kl_coef without ref",
            lambda: losses.ppo_loss(*POLICY_ARGS, kl_coef=0.1),
            ValueError,
            "ref_log_prob",
        ),
    ],
    "entreg.losses.clip_cov_loss": [
        *policy_edges(
            losses.clip_cov_loss, key=jax.random.key(0), ratio=0.3, cov_bounds=(-INF, INF)
        ),
        *policy_bads(losses.clip_cov_loss, key=jax.random.key(0)),
        Bad(
            "ratio",
            lambda: losses.clip_cov_loss(*POLICY_ARGS, key=jax.random.key(0), ratio=1.5),
            ValueError,
            "ratio",
        ),
        Bad(
            "bounds",
            lambda: losses.clip_cov_loss(*POLICY_ARGS, key=jax.random.key(0), cov_bounds=(2, 1)),
            ValueError,
            "cov_bounds",
        ),
        Bad("key", lambda: losses.clip_cov_loss(*POLICY_ARGS, key=np.zeros(3)), TypeError, "key"),
    ],
    "entreg.losses.kl_cov_loss": [
        *policy_edges(losses.kl_cov_loss, ratio=0.3),
        *policy_bads(losses.kl_cov_loss),
        Bad("ratio", lambda: losses.kl_cov_loss(*POLICY_ARGS, ratio=-0.1), ValueError, "ratio"),
        Bad("beta", lambda: losses.kl_cov_loss(*POLICY_ARGS, beta=-1.0), ValueError, "beta"),
    ],
    "entreg.losses.steer_loss": [
        *policy_edges(losses.steer_loss, entropy=ENT)[:1],
        Edge(
            "empty batch",
            lambda lp: losses.steer_loss(lp, *EMPTY[1:], entropy=np.zeros((2, 0)))[0],
            (EMPTY[0],),
        ),
        *policy_bads(losses.steer_loss, entropy=ENT),
    ],
    "entreg.losses.steer_weights": [
        Edge(
            "NaN / -inf padding",
            lambda lp: losses.steer_weights(lp, OLP, ADV, MASK, entropy=ENT),
            (LP,),
        ),
        Edge(
            "exp mode, extreme",
            lambda lp: losses.steer_weights(
                lp,
                EXTREME_OLP,
                np.ones((1, 5)),
                np.ones((1, 5), bool),
                entropy=np.ones((1, 5)),
                mode="exp",
            ),
            (EXTREME_LP,),
        ),
        Edge(
            "empty batch",
            lambda lp: losses.steer_weights(lp, *EMPTY[1:], entropy=np.zeros((2, 0))),
            (EMPTY[0],),
        ),
        Bad(
            "mode",
            lambda: losses.steer_weights(*POLICY_ARGS, entropy=ENT, mode="log"),
            ValueError,
            "mode",
        ),
        Bad(
            "w_min",
            lambda: losses.steer_weights(*POLICY_ARGS, entropy=ENT, mode="exp", w_min=0.0),
            ValueError,
            "w_min",
        ),
        Bad(
            "entropy shape",
            lambda: losses.steer_weights(*POLICY_ARGS, entropy=ENT[:1]),
            ValueError,
            "entropy",
        ),
    ],
    "entreg.losses.token_covariance": [
        Edge("NaN / -inf padding", lambda lp: losses.token_covariance(lp, ADV, MASK), (LP,)),
        Edge("empty batch", lambda lp: losses.token_covariance(lp, lp, EMPTY[3]), (EMPTY[0],)),
        Bad("shape", lambda: losses.token_covariance(LP, ADV[:1], MASK), ValueError, "advantages"),
    ],
    "entreg.losses.grpo_advantages": [
        Edge(
            "equal rewards, one member, NaN for invalid members",
            lambda r: losses.grpo_advantages(
                r,
                where=~np.isnan(
                    np.array([[1.0, 1, 1], [2, NAN, NAN], [NAN, NAN, NAN], [0, 1, NAN]])
                ),
            ),
            (np.array([[1.0, 1, 1], [2, NAN, NAN], [NAN, NAN, NAN], [0, 1e4, NAN]]),),
        ),
        Edge(
            "Dr. GRPO, eps 0",
            lambda r: losses.grpo_advantages(r, scale_by_std=False, eps=0.0),
            (np.array([[1.0, 1.0], [0.0, 1.0]]),),
        ),
        Edge("empty group", losses.grpo_advantages, (np.zeros((2, 0)),)),
        Bad("scalar", lambda: losses.grpo_advantages(1.0), ValueError, "rewards"),
        Bad("eps", lambda: losses.grpo_advantages(np.ones((2, 2)), eps=-1.0), ValueError, "eps"),
    ],
    "entreg.losses.policy_term": [
        Edge(
            "clip-cov term on garbage padding",
            lambda lp: run_term(
                losses.policy_term(losses.clip_cov_loss, "cc", from_signals=("key",), ratio=0.3),
                policy_signals(lp),
            ),
            (LP,),
        ),
        Edge(
            "from hidden states",
            lambda h: run_term(
                losses.policy_term(losses.ppo_loss, "ppo", from_hidden={}),
                {
                    "hidden": h,
                    "lm_head": np.ones((4, 7)) * 0.1,
                    "tokens": np.array([[0, 6, 2], [1, 1, 1]]),
                    "old_log_prob": np.zeros((2, 3)),
                    "advantages": np.ones((2, 3)),
                    "mask": np.ones((2, 3), bool),
                },
            ),
            (RNG.normal(size=(2, 3, 4)) * 1e2,),
        ),
        Bad("loss_fn", lambda: losses.policy_term(3, "p"), TypeError, "loss_fn"),
        Bad(
            "mode",
            lambda: losses.policy_term(losses.ppo_loss, "p", mode="mean"),
            ValueError,
            "mode",
        ),
        Bad(
            "from_hidden",
            lambda: losses.policy_term(losses.ppo_loss, "p", from_hidden={"x": 1}),
            ValueError,
            "from_hidden",
        ),
    ],
    "entreg.losses.entropy_bonus": [
        Edge(
            "NaN entropy in padding",
            lambda h: run_term(losses.entropy_bonus(0.1), {"entropy": h, "mask": MASK}),
            (ENT,),
        ),
        Bad("weight", lambda: losses.entropy_bonus(-1.0), ValueError, "weight"),
    ],
    # ----------------------------------------------------------------------------------- EPO
    "entreg.losses.EpoState": [
        Edge(
            "fields",
            lambda r: losses.EpoState(r, jnp.zeros(2, jnp.int32)).reference * 2,
            (np.ones(2),),
        ),
    ],
    "entreg.losses.epo_init": [
        Edge("one turn", lambda: losses.epo_init(1), (), ()),
        Bad("bool", lambda: losses.epo_init(True), ValueError, "num_turns"),
        Bad("zero", lambda: losses.epo_init(0), ValueError, "num_turns"),
    ],
    "entreg.losses.epo_penalty": [
        Edge(
            "NaN padding, unseen turns",
            lambda h: losses.epo_penalty(h, MASK, np.zeros((3, 5), int), losses.epo_init(2)),
            (ENT,),
        ),
        Bad(
            "turn ids",
            lambda: losses.epo_penalty(ENT, MASK, np.zeros((3, 5)), losses.epo_init(2)),
            ValueError,
            "turn_ids",
        ),
        Bad(
            "kappa",
            lambda: losses.epo_penalty(
                ENT, MASK, np.zeros((3, 5), int), losses.epo_init(2), kappa_low=2.0, kappa_high=1.0
            ),
            ValueError,
            "kappa_high",
        ),
    ],
    "entreg.losses.epo_loss": [
        Edge(
            "NaN padding",
            lambda h: losses.epo_loss(
                h, MASK, np.zeros((3, 5), int), losses.epo_init(2), epoch=200
            )[0],
            (ENT,),
        ),
        Bad(
            "coef",
            lambda: losses.epo_loss(
                ENT, MASK, np.zeros((3, 5), int), losses.epo_init(2), epoch=0, entropy_coef=-1.0
            ),
            ValueError,
            "entropy_coef",
        ),
    ],
    "entreg.losses.epo_update": [
        Edge(
            "NaN padding",
            lambda h: losses.epo_update(losses.epo_init(2), h, MASK, np.zeros((3, 5), int)),
            (ENT,),
            (),
        ),
    ],
    "entreg.losses.epo_phase_weight": [
        Edge(
            "epochs around both halves",
            losses.epo_phase_weight,
            (np.array([-5, 0, 74, 75, 150, 10**6]),),
            (),
        ),
        Bad(
            "total", lambda: losses.epo_phase_weight(3, total_epochs=1), ValueError, "total_epochs"
        ),
    ],
    "entreg.losses.epo_term": [
        Edge(
            "NaN padding",
            lambda h: run_term(
                losses.epo_term(num_turns=2),
                {"entropy": h, "mask": MASK, "turn_ids": np.ones((3, 5), int)},
                step=3,
            ),
            (ENT,),
        ),
        Bad("mode", lambda: losses.epo_term(num_turns=2, mode="x"), ValueError, "mode"),
    ],
    "entreg.losses.turn_entropy": [
        Edge(
            "NaN padding, an empty turn",
            lambda h: losses.turn_entropy(h, MASK, np.zeros((3, 5), int), 3),
            (ENT,),
        ),
        Bad(
            "zero turns",
            lambda: losses.turn_entropy(ENT, MASK, np.zeros((3, 5), int), 0),
            ValueError,
            "num_turns",
        ),
    ],
    # ------------------------------------------------------------------------- diagnostics
    "entreg.losses.first_order_entropy_change": [
        Edge(
            "-inf logits, NaN step where excluded",
            lambda z, dz: losses.first_order_entropy_change(z, dz),
            (
                np.array([[0.0, -INF, 1e4], [1.0, 2.0, 3.0]]),
                np.array([[1.0, NAN, 1.0], [0.1, 0.2, -0.3]]),
            ),
            (0,),
        ),
        Bad(
            "shape",
            lambda: losses.first_order_entropy_change(np.zeros(3), np.zeros(4)),
            ValueError,
            "delta_logits",
        ),
    ],
    "entreg.losses.fit_entropy_reward": [
        Edge(
            "constant entropy and rewards",
            losses.fit_entropy_reward,
            (np.ones(4), np.ones(4)),
            (0, 1),
        ),
        Edge(
            "large entropy",
            losses.fit_entropy_reward,
            (np.array([0.0, 50.0, 80.0]), np.array([1.0, 0, 2])),
            (0, 1),
        ),
        Bad(
            "one point",
            lambda: losses.fit_entropy_reward(np.ones(1), np.ones(1)),
            ValueError,
            "entropy",
        ),
    ],
    "entreg.losses.EntropyRewardFit": [
        Edge("fields", lambda a: losses.EntropyRewardFit(a, 1.0, 0.5).a * 2, (np.float64(0.3),)),
    ],
    "entreg.losses.EntropyRewardFit.predict": [
        Edge(
            "extreme entropies",
            lambda h: losses.EntropyRewardFit(0.3, 1.0, 0.9).predict(h),
            (np.array([0.0, 3.0, -1e4]),),
        ),
    ],
    # ---------------------------------------------------------------------- attention remedies
    "entreg.losses.max_attention_entropy": [
        Edge("one key", lambda: losses.max_attention_entropy(3, 1, causal=True), (), ()),
        Bad("zero keys", lambda: losses.max_attention_entropy(4, 0), ValueError, "num_keys"),
        Bad("negative keys", lambda: losses.max_attention_entropy(4, -1), ValueError, "num_keys"),
    ],
    "entreg.losses.attention_band_penalty": [
        Edge(
            "NaN in masked rows",
            lambda h, th: losses.attention_band_penalty(
                h, th, max_entropy=np.log(6.0), mask=ROW_MASK
            ),
            (H_GARBAGE, np.full((3, 1), 0.5)),
            (0, 1),
        ),
        Edge(
            "faithful",
            lambda h: losses.attention_band_penalty(
                h, 0.5, max_entropy=np.log(6.0), mode="faithful"
            ),
            (H_LAYER,),
        ),
        Bad(
            "theta shape",
            lambda: losses.attention_band_penalty(H_LAYER, np.ones((4, 1)), max_entropy=1.0),
            ValueError,
            "theta",
        ),
        Bad(
            "mode",
            lambda: losses.attention_band_penalty(H_LAYER, 0.5, max_entropy=1.0, mode="x"),
            ValueError,
            "mode",
        ),
    ],
    "entreg.losses.attention_floor_penalty": [
        Edge(
            "NaN in masked rows",
            lambda h: losses.attention_floor_penalty(
                h, 0.3, max_entropy=np.log(6.0), mask=ROW_MASK
            ),
            (H_GARBAGE,),
        ),
        Bad(
            "1-d entropy",
            lambda: losses.attention_floor_penalty(np.ones(3), 0.3, max_entropy=1.0),
            ValueError,
            "entropy",
        ),
    ],
    "entreg.losses.attention_entropy_term": [
        Edge(
            "band over two layers, masked NaN rows",
            lambda h: run_term(
                losses.attention_entropy_term("band", target=0.5, mask="rows"),
                {"attention_entropy": (h, h), "rows": ROW_MASK},
            ),
            (H_GARBAGE,),
        ),
        Bad(
            "num_keys",
            lambda: losses.attention_entropy_term("floor", target=0.3, num_keys=0),
            ValueError,
            "num_keys",
        ),
        Bad(
            "kind", lambda: losses.attention_entropy_term("ceiling", target=0.3), ValueError, "kind"
        ),
    ],
    "entreg.losses.SigmaReparamLinear": [
        Edge("zero kernel", lambda x: sigma_layer(x), (RNG.normal(size=(2, 3)),), jit=False),
        Edge(
            "zero kernel, gamma one",
            lambda x: sigma_layer(x, gamma_init="one"),
            (RNG.normal(size=(2, 3)),),
            jit=False,
        ),
        Bad(
            "zero features",
            lambda: losses.SigmaReparamLinear(0, 5, rngs=nnx.Rngs(0)),
            ValueError,
            "in_features",
        ),
        Bad(
            "gamma_init",
            lambda: losses.SigmaReparamLinear(2, 2, gamma_init="two", rngs=nnx.Rngs(0)),
            ValueError,
            "gamma_init",
        ),
    ],
    "entreg.losses.SigmaReparamLinear.__call__": [
        Edge(
            "1e4 inputs, gamma zero",
            lambda x: sigma_layer(x, nnx.initializers.lecun_normal(), "zero"),
            (RNG.normal(size=(2, 3)) * 1e4,),
            jit=False,
        ),
    ],
    "entreg.losses.SigmaReparamLinear.sigma": [
        Edge(
            "zero kernel",
            lambda: losses.SigmaReparamLinear(
                3, 2, kernel_init=nnx.initializers.zeros, rngs=nnx.Rngs(0)
            ).sigma(),
            (),
            (),
            jit=False,
        ),
    ],
    "entreg.losses.PowerIteration": [
        Edge("a variable", lambda v: losses.PowerIteration(v)[...] * 2, (np.ones(3),), jit=False),
    ],
    "entreg.losses.qk_spectral_norm": [
        Edge(
            "zero weights and vector",
            lambda wq: losses.qk_spectral_norm(wq, np.zeros((4, 2)), np.zeros(4)),
            (np.zeros((4, 2)),),
        ),
        Bad(
            "vector length",
            lambda: losses.qk_spectral_norm(np.ones((4, 2)), np.ones((4, 2)), np.ones(3)),
            ValueError,
            "v",
        ),
        Bad(
            "iters",
            lambda: losses.qk_spectral_norm(np.ones((4, 2)), np.ones((4, 2)), np.ones(4), iters=0),
            ValueError,
            "iters",
        ),
    ],
    # -------------------------------------------------------------------- representation terms
    "entreg.losses.vne_bonus": [
        Edge(
            "NaN in a masked row",
            lambda x: run_term(
                losses.vne_bonus(0.1, where="rows"), {"features": x, "rows": np.arange(5) != 1}
            ),
            (np.where(np.arange(5)[:, None] != 1, RNG.normal(size=(5, 3)), NAN),),
        ),
        Bad("missing signal", lambda: run_term(losses.vne_bonus(), {}), KeyError, "features"),
    ],
    "entreg.losses.vne_penalty": [
        Edge(
            "duplicated rows",
            lambda x: run_term(losses.vne_penalty(0.1), {"features": x}),
            (np.ones((4, 3)),),
        ),
    ],
    "entreg.losses.vendi_bonus": [
        Edge(
            "identical samples",
            lambda x: run_term(losses.vendi_bonus(0.1, order=2.0), {"features": x}),
            (np.ones((4, 3)),),
        ),
    ],
    # ----------------------------------------------------------------------------------- SEDD
    **graph_edges(ABS, XT_ABS),
    **graph_edges(UNI, XT_UNI),
    **noise_edges(LOGLIN),
    **noise_edges(GEO),
    "entreg.losses.denoising_score_entropy": [
        Edge(
            "NaN scores, garbage tokens in padding",
            lambda s: losses.denoising_score_entropy(
                UNI,
                s,
                np.where(SEQ_MASK, XT_UNI, -5),
                np.where(SEQ_MASK, X0, 99),
                np.array([0.5, 1.0]),
                np.array([1.0, 2.0]),
                mask=SEQ_MASK,
            ),
            (np.where(SEQ_MASK[..., None], RNG.normal(size=(2, 4, 3)), NAN),),
        ),
        Bad(
            "graph",
            lambda: losses.denoising_score_entropy(
                "x", np.zeros((2, 4, 3)), X0, X0, np.ones(2), np.ones(2)
            ),
            TypeError,
            "graph",
        ),
        Bad(
            "sigma shape",
            lambda: losses.denoising_score_entropy(
                UNI, np.zeros((2, 4, 3)), X0, X0, np.ones(3), np.ones(2)
            ),
            ValueError,
            "sigma",
        ),
    ],
    "entreg.losses.sedd_loss": [
        Edge(
            "padding holds garbage ids",
            lambda w: losses.sedd_loss(
                jax.random.key(0),
                lambda xt, s: w * MODEL4(xt, s),
                np.where(SEQ_MASK, X0, 77),
                ABS,
                LOGLIN,
                mask=SEQ_MASK,
            ),
            (np.float64(1.0),),
        ),
        Bad(
            "sampling_eps",
            lambda: losses.sedd_loss(
                jax.random.key(0), position_model(4), X0, ABS, LOGLIN, sampling_eps=2.0
            ),
            ValueError,
            "sampling_eps",
        ),
        Bad(
            "float tokens",
            lambda: losses.sedd_loss(jax.random.key(0), position_model(4), X0 * 1.0, ABS, LOGLIN),
            TypeError,
            "x0",
        ),
    ],
    "entreg.losses.sedd_elbo": [
        Edge(
            "uniform, padding",
            lambda w: losses.sedd_elbo(
                jax.random.key(0),
                lambda xt, s: w * MODEL3(xt, s),
                np.where(SEQ_MASK, X0, -1),
                UNI,
                GEO,
                num_times=2,
                mask=SEQ_MASK,
            ),
            (np.float64(1.0),),
        ),
        Bad(
            "num_times",
            lambda: losses.sedd_elbo(
                jax.random.key(0), position_model(4), X0, ABS, LOGLIN, num_times=0
            ),
            ValueError,
            "num_times",
        ),
    ],
    "entreg.losses.score_entropy_term": [
        Edge(
            "uniform, NaN padding",
            lambda s: run_term(
                losses.score_entropy_term(UNI, mask="m"),
                {
                    "log_score": s,
                    "xt": XT_UNI,
                    "x0": X0,
                    "sigma": np.array([0.5, 1.0]),
                    "rate": np.ones(2),
                    "m": SEQ_MASK,
                },
            ),
            (np.where(SEQ_MASK[..., None], 1.0, NAN) * np.ones((2, 4, 3)),),
        ),
        Bad("name", lambda: losses.score_entropy_term(UNI, name=""), ValueError, "name"),
    ],
    "entreg.losses.step_probs": [
        Edge(
            "exact-looking scores, analytic and Euler",
            lambda s: [
                losses.step_probs(ABS, LOGLIN, s, XT_ABS[0], 0.5, 0.4, method=m)
                for m in ("analytic", "euler")
            ],
            (RNG.normal(size=(4, 4)),),
        ),
        Bad(
            "method",
            lambda: losses.step_probs(
                ABS, LOGLIN, np.zeros((4, 4)), XT_ABS[0], 0.5, 0.4, method="x"
            ),
            ValueError,
            "method",
        ),
    ],
    "entreg.losses.sample": [
        Edge(
            "one step",
            lambda: losses.sample(
                jax.random.key(0), position_model(4), ABS, LOGLIN, (2, 3), steps=1
            ),
            (),
            (),
        ),
        Bad(
            "shape",
            lambda: losses.sample(jax.random.key(0), position_model(4), ABS, LOGLIN, (5,), steps=1),
            ValueError,
            "shape",
        ),
        Bad(
            "steps",
            lambda: losses.sample(
                jax.random.key(0), position_model(4), ABS, LOGLIN, (2, 3), steps=0
            ),
            ValueError,
            "steps",
        ),
    ],
}
