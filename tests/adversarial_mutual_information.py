"""Adversarial cases for the mutual-information family (bounds, critics, kNN, closed forms,
O-information, embedding entropies, the InfoNCE kernel and the contrastive loss terms).

Every Edge compiles four times (eager, jit, their gradients), so each callable gets one Edge
combining its adversarial inputs; fully masked batches, N = 1 and float32 / float64 inputs are
covered by the unit tests (tests/test_mi_bounds.py and neighbours)."""

import jax
import jax.numpy as jnp
import numpy as np
from adversarial import Bad, Edge

import entreg
from entreg import kernels, losses

NAN = np.nan
# Scores [4, 5] in bf16: +1e4 positives, -1e4 negatives, NaN in masked slots, a masked row.
VALID = np.ones((4, 5), bool)
VALID[2] = False
VALID[0, 3] = False
S = jnp.asarray(np.where(VALID, np.where(np.eye(4, 5, dtype=bool), 1e4, -1e4), NAN), jnp.bfloat16)
X8 = np.linspace(-1.0, 1.0, 24).reshape(8, 3)  # 8 samples in 3-d
Y8 = np.cos(np.arange(16.0)).reshape(8, 2)
_Q = np.linalg.qr(np.cos(np.arange(9.0)).reshape(3, 3))[0]
COV = _Q @ np.diag([2.0, 1.0, 1e-6]) @ _Q.T  # nearly singular (condition number 2e6)
ROWS = np.array([True] * 6 + [False] * 2)
X8_DIRTY = np.where(ROWS[:, None], X8, NAN)
LABELS = np.array([0, 1, 1, 2, 2, 2, 7, 7])
E16 = np.tile(np.eye(4), (4, 1)) * 1e4  # one-hot, huge embeddings [16, 4]


def _zero(out):
    assert float(jax.tree.leaves(out)[0]) == 0.0


def bound_cases(fn):
    return [
        Edge(
            "bf16, +-1e4, NaN masked slots, masked row",
            lambda s: fn(s, where=VALID),
            (S,),
            dtype=jnp.float32,
        ),
        Bad("int scores", lambda: fn(np.zeros((3, 3), int)), TypeError, "scores"),
        Bad("M < N", lambda: fn(np.zeros((3, 2))), ValueError, "scores"),
        Bad(
            "where shape",
            lambda: fn(np.zeros((3, 3)), where=np.ones((2, 3), bool)),
            ValueError,
            "where",
        ),
    ]


BOUNDS = {
    "nwj_bound": entreg.nwj_bound,
    "dv_bound": entreg.dv_bound,
    "infonce_bound": lambda s, **kw: entreg.infonce_bound(s, direction="both", **kw),
    "js_bound": entreg.js_bound,
    "jsd_bound": entreg.jsd_bound,
    "smile_bound": entreg.smile_bound,
    "tuba_bound": lambda s, **kw: entreg.tuba_bound(s, jnp.zeros(s.shape[-1], s.dtype), **kw),
    "mine_bound": entreg.mine_bound,
}

CASES = {
    **{f"entreg.{name}": bound_cases(fn) for name, fn in BOUNDS.items()},
    "entreg.MineState": [
        Edge("constructed", lambda a: entreg.MineState(a, jnp.int32(3)), (np.float32(2.0),)),
        Bad("state type", lambda: entreg.mine_bound(X8[:3, :3], (0.0, 0)), TypeError, "state"),
    ],
    "entreg.MineState.init": [
        Edge("float64", lambda: entreg.MineState.init(jnp.float64), (), grad_argnums=()),
        Bad("decay 1", lambda: entreg.mine_bound(X8[:3, :3], decay=1.0), ValueError, "decay"),
    ],
    "entreg.interpolated_bound": [
        Edge(
            "NaN padding, +-1e4, alpha near 1",
            lambda s, q: entreg.interpolated_bound(s, q, 30.0, where=ROWS[:4]),
            (np.where(ROWS[:4, None] & ROWS[None, :4], 1e4 * np.eye(4) - 1e4, NAN), np.zeros(4)),
            grad_argnums=(0, 1),
        ),
        Bad(
            "not square",
            lambda: entreg.interpolated_bound(np.zeros((3, 4)), np.zeros(3), 0.0),
            ValueError,
            "scores",
        ),
        Bad(
            "baseline shape",
            lambda: entreg.interpolated_bound(np.zeros((3, 3)), np.zeros(4), 0.0),
            ValueError,
            "log_baseline",
        ),
    ],
    "entreg.barber_agakov_bound": [
        Edge(
            "NaN masked, bf16, -1e4",
            lambda lq: entreg.barber_agakov_bound(lq, 1.0, where=ROWS),
            (jnp.asarray(np.where(ROWS, -1e4, NAN), jnp.bfloat16),),
            dtype=jnp.float32,
        ),
        Bad(
            "entropy shape",
            lambda: entreg.barber_agakov_bound(np.zeros((2, 3)), np.zeros(3)),
            ValueError,
            "entropy",
        ),
    ],
    "entreg.separable_scores": [
        Edge(
            "zero rows, cosine, bf16",
            lambda a, b: entreg.separable_scores(a, b, similarity="cosine", temperature=0.05),
            (
                jnp.asarray(np.r_[X8[:7], np.zeros((1, 3))], jnp.bfloat16),
                jnp.zeros((8, 3), jnp.bfloat16),
            ),
            grad_argnums=(0, 1),
            dtype=jnp.float32,
        ),
        Bad("width", lambda: entreg.separable_scores(X8, Y8), ValueError, "x_embeddings"),
        Bad(
            "similarity",
            lambda: entreg.separable_scores(X8, X8, similarity="l2"),
            ValueError,
            "similarity",
        ),
    ],
    "entreg.concat_scores": [
        Edge(
            "block larger than N, size-1 y",
            lambda a, b: entreg.concat_scores(lambda z: jnp.sum(z * z, -1), a, b, block_size=100),
            (X8, X8[:1]),
            grad_argnums=(0, 1),
        ),
        Bad(
            "critic output", lambda: entreg.concat_scores(lambda z: z, X8, X8), ValueError, "critic"
        ),
        Bad(
            "block_size",
            lambda: entreg.concat_scores(jnp.sum, X8, X8, block_size=0),
            ValueError,
            "block_size",
        ),
    ],
    "entreg.ksg_mutual_information": [
        Edge(
            "ties, NaN padding, f32",
            lambda a, b: entreg.ksg_mutual_information(a, b, k=2, where=ROWS, block_size=3),
            (np.round(X8_DIRTY, 0).astype(np.float32), np.ones(8, np.float32)),
            grad_argnums=(0, 1),
        ),
        Bad("k >= N", lambda: entreg.ksg_mutual_information(X8, Y8, k=8), ValueError, "k"),
        Bad(
            "samples",
            lambda: entreg.ksg_mutual_information(X8, Y8[:5]),
            ValueError,
            "variables[1]",
        ),
    ],
    "entreg.ksg_total_correlation": [
        Edge(
            "3 variables 1e4 apart, variant 2",
            lambda a, b: entreg.ksg_total_correlation([a, b, a[:, :1] * 1e4], variant=2),
            (X8, Y8),
            grad_argnums=(0, 1),
        ),
        Bad("one variable", lambda: entreg.ksg_total_correlation([X8]), ValueError, "variables"),
        Bad(
            "variant",
            lambda: entreg.ksg_total_correlation([X8, Y8], variant=0),
            ValueError,
            "variant",
        ),
    ],
    "entreg.kl_entropy": [
        Edge(
            "duplicate: -inf with a finite gradient",
            lambda a: entreg.kl_entropy(a, k=1),
            (np.r_[X8[:7], X8[:1]],),
            infinite_ok=True,
            expect=lambda h: np.testing.assert_equal(float(h), -np.inf),
        ),
        Bad("k >= N", lambda: entreg.kl_entropy(X8, k=8), ValueError, "k"),
        Bad("where shape", lambda: entreg.kl_entropy(X8, where=ROWS[:3]), ValueError, "where"),
    ],
    "entreg.gaussian_entropy": [
        Edge(
            "nearly singular, and bf16",
            lambda c, b: (entreg.gaussian_entropy(c), entreg.gaussian_entropy(b)),
            (COV, jnp.asarray(2 * np.eye(3), jnp.bfloat16)),
            grad_argnums=(0, 1),
        ),
        Bad("not square", lambda: entreg.gaussian_entropy(np.zeros((2, 3))), ValueError, "cov"),
        Bad("not PD", lambda: entreg.gaussian_entropy(-np.eye(2)), ValueError, "cov"),
    ],
    "entreg.gaussian_mutual_information": [
        Edge(
            "nearly singular",
            lambda c: entreg.gaussian_mutual_information(c, 1),
            (COV,),
        ),
        Bad("split", lambda: entreg.gaussian_mutual_information(COV, 3), ValueError, "split"),
    ],
    "entreg.gaussian_total_correlation": [
        Edge(
            "groups",
            lambda c: entreg.gaussian_total_correlation(c, [[0, 2], [1]]),
            (np.eye(3) + 0.5,),
        ),
        Bad(
            "overlapping groups",
            lambda: entreg.gaussian_total_correlation(COV, [[0, 1], [1]]),
            ValueError,
            "groups",
        ),
    ],
    "entreg.gaussian_o_information": [
        Edge(
            "identity: 0",
            entreg.gaussian_o_information,
            (np.eye(3),),
            expect=lambda o: np.testing.assert_allclose(o, 0.0, atol=1e-12),
        ),
        Bad(
            "group out of range",
            lambda: entreg.gaussian_o_information(COV, [[0], [3]]),
            ValueError,
            "groups",
        ),
    ],
    "entreg.multivariate_information": [
        Edge(
            "plug-in entropies of constant and tied labels",
            lambda: entreg.multivariate_information(
                lambda c: entreg.discrete_entropy(np.c_[LABELS, LABELS * 0, LABELS][:, list(c)]),
                3,
            ),
            (),
            grad_argnums=(),
        ),
        Bad(
            "one variable",
            lambda: entreg.multivariate_information(lambda c: 0.0, [[0, 1]]),
            ValueError,
            "groups",
        ),
        Bad(
            "not callable",
            lambda: entreg.multivariate_information(0.0, 2),
            TypeError,
            "entropy_of",
        ),
    ],
    "entreg.MultivariateInformation": [
        Edge(
            "constructed",
            lambda a: entreg.MultivariateInformation(a, a, a - a, 2 * a),
            (np.float32(1.0),),
        ),
        Bad(
            "groups type",
            lambda: entreg.multivariate_information(lambda c: 0.0, 2.5),
            TypeError,
            "groups",
        ),
    ],
    "entreg.discrete_entropy": [
        Edge(
            "huge labels, padding, one value, Miller-Madow",
            lambda: (
                entreg.discrete_entropy(
                    np.array([2**30, -5, 2**30, 7]), where=np.array([1, 1, 1, 0], bool)
                ),
                entreg.discrete_entropy(np.zeros(4, int), correction="miller_madow"),
            ),
            (),
            grad_argnums=(),
        ),
        Bad("float labels", lambda: entreg.discrete_entropy(X8[:, 0]), TypeError, "labels"),
        Bad(
            "correction",
            lambda: entreg.discrete_entropy(LABELS, correction="grassberger"),
            ValueError,
            "correction",
        ),
    ],
    "entreg.discrete_mutual_information": [
        Edge(
            "joint columns, bool labels, Miller-Madow",
            lambda: entreg.discrete_mutual_information(
                np.c_[LABELS, LABELS % 2], LABELS > 1, correction="miller_madow"
            ),
            (),
            grad_argnums=(),
        ),
        Bad(
            "sample counts",
            lambda: entreg.discrete_mutual_information(LABELS, LABELS[:3]),
            ValueError,
            "x",
        ),
    ],
    "entreg.m_spacing_entropy": [
        Edge(
            "bf16 ties (a saturated sigmoid), NaN padding",
            lambda a: entreg.m_spacing_entropy(a, where=ROWS),
            (
                jnp.asarray(
                    np.where(ROWS[:, None], np.r_[np.ones((5, 3)), X8[5:]], NAN), jnp.bfloat16
                ),
            ),
            dtype=jnp.float32,
        ),
        Bad("m >= N", lambda: entreg.m_spacing_entropy(X8, m=8), ValueError, "m"),
        Bad("eps < 0", lambda: entreg.m_spacing_entropy(X8, eps=-1.0), ValueError, "eps"),
    ],
    "entreg.vmf_kde_entropy": [
        Edge(
            "zero rows, NaN padding, kappa 50",
            lambda z: entreg.vmf_kde_entropy(z, kappa=50.0, where=ROWS),
            (np.where(ROWS[:, None], np.r_[np.zeros((1, 3)), X8[1:]], NAN),),
        ),
        Bad("kappa", lambda: entreg.vmf_kde_entropy(X8, kappa=0.0), ValueError, "kappa"),
    ],
    "entreg.vmf_log_normalizer": [
        Edge(
            "d = 1000, 2; kappa 1e-3, 1e4",
            lambda: np.array(
                [
                    entreg.vmf_log_normalizer(1000, 1e-3),
                    entreg.vmf_log_normalizer(1000, 1e4),
                    entreg.vmf_log_normalizer(2, 1e4),
                ]
            ),
            (),
            grad_argnums=(),
            jit=False,
        ),
        Bad("dim", lambda: entreg.vmf_log_normalizer(0, 1.0), ValueError, "dim"),
    ],
    "entreg.kernels.infonce_from_embeddings": [
        Edge(
            "one-hot 1e4 embeddings, NaN padding, bf16",
            lambda a, b: kernels.infonce_from_embeddings(
                a,
                b,
                temperature=0.1,
                direction="both",
                where_x=np.arange(16) != 3,
                where_y=np.arange(16) != 3,
                block_size=5,
            ),
            (
                jnp.asarray(np.where(np.arange(16)[:, None] != 3, E16, NAN), jnp.bfloat16),
                jnp.asarray(E16, jnp.bfloat16),
            ),
            grad_argnums=(0, 1),
            dtype=jnp.float32,
        ),
        Bad(
            "exclude_diagonal without labels",
            lambda: kernels.infonce_from_embeddings(X8, X8, exclude_diagonal=True),
            ValueError,
            "labels",
        ),
        Bad(
            "block_size",
            lambda: kernels.infonce_from_embeddings(X8, X8, block_size=0),
            ValueError,
            "block_size",
        ),
    ],
    "entreg.kernels.reference_infonce_from_embeddings": [
        Edge(
            "rectangular, columns",
            lambda a, b: kernels.reference_infonce_from_embeddings(a, b, direction="columns"),
            (X8[:5], X8),
            grad_argnums=(0, 1),
        ),
        Bad("widths", lambda: kernels.reference_infonce_from_embeddings(X8, Y8), ValueError, "x"),
    ],
    "entreg.losses.infonce_bonus": [
        Edge(
            "NT-Xent, zero and huge embeddings, NaN padding",
            lambda a: losses.infonce_bonus(0.05, negatives="all", where="valid")(
                {"z1": a, "z2": 2.0 * a, "valid": ROWS}, (), None
            ),
            (np.where(ROWS[:, None], np.r_[np.zeros((1, 3)), X8[1:] * 1e4], NAN),),
        ),
        Bad("temperature", lambda: losses.infonce_bonus(-1.0), ValueError, "temperature"),
        Bad("views", lambda: losses.infonce_bonus(views=("z1",)), ValueError, "views"),
    ],
    "entreg.losses.deep_infomax_bonus": [
        Edge(
            "+-1e4 scores, NaN padding",
            lambda loc, glob: losses.deep_infomax_bonus(where="valid")(
                {"local": loc, "global": glob, "valid": ROWS}, (), None
            ),
            (np.where(ROWS[:, None, None], 1e4 * X8[:, None, :], NAN), X8),
            grad_argnums=(0, 1),
        ),
        Bad(
            "widths",
            lambda: losses.deep_infomax_bonus()({"local": X8, "global": Y8}, (), None),
            ValueError,
            "local_features",
        ),
    ],
    "entreg.losses.effective_entropy_bonus": [
        Edge(
            "saturated sigmoid ties, covariance penalty, NaN padding",
            lambda f: losses.effective_entropy_bonus(covariance_weight=1.0, where="valid")(
                {"features": f, "valid": ROWS}, (), None
            ),
            (np.where(ROWS[:, None], 1e4 * X8, NAN),),
        ),
        Bad(
            "kappa with e2mc",
            lambda: losses.effective_entropy_bonus("e2mc", kappa=1.0),
            ValueError,
            "kappa",
        ),
        Bad(
            "covariance weight",
            lambda: losses.effective_entropy_bonus(covariance_weight=-1.0),
            ValueError,
            "covariance_weight",
        ),
    ],
}
