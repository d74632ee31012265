"""Adversarial cases for test-time adaptation: entreg.losses (tta) and entreg.losses.adaptation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from adversarial import Bad, Edge
from entreg.losses import adaptation
from flax import nnx

from entreg import losses

L = "entreg.losses."
A = "entreg.losses.adaptation."
NEG_INF = -jnp.inf

# [B, C] = [4, 3] logits with the edges: a -inf class, +-1e4, one-hot, a NaN padding row.
EDGY = jnp.array([[2.0, NEG_INF, 0.0], [1e4, 0.0, -1e4], [0.0, 0.0, 0.0], [jnp.nan] * 3])
ROWS = jnp.array([True, True, True, False])
CONFIDENT = jnp.array([[30.0, 0.0, 0.0], [0.0, 1e4, 0.0], [0.0, 0.0, 25.0], [jnp.nan] * 3])
UNIFORM = jnp.zeros((4, 3))  # nothing passes an entropy filter
EMPTY = jnp.zeros((0, 3))


def _eq(expected):
    def check(out):
        np.testing.assert_allclose(np.asarray(out, np.float64), expected, rtol=1e-6, atol=1e-7)

    return check


def _zero_loss(out):
    loss, metrics = out
    assert float(loss) == 0.0 and int(metrics["num_selected"]) == 0


class Net(nnx.Module):
    """Flatten - Linear - BatchNorm - relu - Linear - LayerNorm - Linear head (4 classes)."""

    def __init__(self, rngs, classes=4):
        self.dense = nnx.Linear(16, 8, rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.mid = nnx.Linear(8, 8, rngs=rngs)
        self.ln = nnx.LayerNorm(8, rngs=rngs)
        self.head = nnx.Linear(8, classes, rngs=rngs)

    def __call__(self, x, mask=None):
        h = self.dense(x.reshape(x.shape[0], -1))
        h = jax.nn.relu(self.bn(h, mask=None if mask is None else mask[:, None]))
        return self.head(self.ln(self.mid(h)))


NET = Net(nnx.Rngs(0))
X = jnp.asarray(np.random.default_rng(0).normal(size=(4, 4, 4, 1)))
HUGE = X * 1e4  # saturated softmax: one-hot predictions
TENT = adaptation.Adapter(NET, adaptation.tent(optax.adam(1e-2)))
EATA_STATE = losses.eata_init(3)
WARM_STATE = losses.EataState(jnp.array([0.2, 0.3, 0.5]), jnp.array(True))
PARAMS = {"w": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)}
FISHER = losses.FisherState({"w": jnp.array([1.0, 0.0]), "b": jnp.array(2.0)}, PARAMS)


def _method_check(**fields):
    def check(method):
        assert isinstance(method, adaptation.Method)
        for name, value in fields.items():
            assert getattr(method, name) == value, (name, getattr(method, name), value)

    return check


def _preset(build, **fields):
    """A preset's Method, checked against the papers' defaults (no computation)."""
    return Edge("defaults", build, (), grad_argnums=(), jit=False, expect=_method_check(**fields))


def _term(term, signals):
    return term(signals, term.init()).loss


def _adapted(out):
    state, logits, metrics = out
    assert np.isfinite(np.asarray(logits)).all()
    assert bool(jnp.all(metrics["adapt/updated"]))


CASES = {
    L + "entropy_margin": [
        Edge(
            "C = 2",
            losses.entropy_margin,
            (2,),
            grad_argnums=(),
            jit=False,
            expect=_eq(0.4 * np.log(2)),
        ),
        Bad("C = 1", lambda: losses.entropy_margin(1), ValueError, "num_classes"),
        Bad("factor 0", lambda: losses.entropy_margin(10, 0.0), ValueError, "factor"),
    ],
    L + "reliable_mask": [
        Edge(
            "NaN and bf16",
            lambda h: losses.reliable_mask(h, 0.5),
            (jnp.array([jnp.nan, 0.5, 0.1], jnp.bfloat16),),
            grad_argnums=(),
            expect=_eq([False, False, True]),
        ),
        Bad("e0 = 0", lambda: losses.reliable_mask(jnp.zeros(3), 0.0), ValueError, "e0"),
        Bad("2-D", lambda: losses.reliable_mask(jnp.zeros((2, 3)), 1.0), ValueError, "entropy"),
        Bad(
            "where shape",
            lambda: losses.reliable_mask(jnp.zeros(3), 1.0, where=ROWS),
            ValueError,
            "where",
        ),
    ],
    L + "entropy_weight": [
        Edge(
            "f16 entropy, E0 = 0.4 ln 1000",
            lambda h: losses.entropy_weight(h, 2.763),
            (jnp.array([0.0, 2.0, 6.9], jnp.float16),),
            dtype=jnp.float32,
        ),
        Bad("e0 negative", lambda: losses.entropy_weight(jnp.zeros(3), -1.0), ValueError, "e0"),
        Bad("e0 array", lambda: losses.entropy_weight(jnp.zeros(3), jnp.ones(())), TypeError, "e0"),
    ],
    L + "nonredundant_mask": [
        Edge(
            "one-hot vs uniform, C = 3",
            lambda p: losses.nonredundant_mask(p, jnp.full(3, 1 / 3), 0.5),
            (jnp.eye(3),),
            grad_argnums=(),
            expect=_eq([False, False, False]),
        ),
        Bad(
            "eps 0",
            lambda: losses.nonredundant_mask(jnp.eye(3), jnp.ones(3), 0.0),
            ValueError,
            "eps",
        ),
        Bad(
            "reference shape",
            lambda: losses.nonredundant_mask(jnp.eye(3), jnp.ones(2), 0.4),
            ValueError,
            "reference",
        ),
    ],
    L + "plpd": [
        Edge("edges, padding", lambda z: losses.plpd(z, z[::-1], where=ROWS), (EDGY,)),
        Bad("shape", lambda: losses.plpd(EDGY, EDGY[:2]), ValueError, "destroyed_logits"),
    ],
    L + "patch_shuffle": [
        Edge(
            "bf16, size-1 batch, resized",
            lambda x: losses.patch_shuffle(jax.random.key(1), x, grid=2),
            (jnp.ones((1, 5, 5, 1), jnp.bfloat16),),
            dtype=jnp.bfloat16,
        ),
        Bad(
            "int images",
            lambda: losses.patch_shuffle(jax.random.key(0), jnp.ones((1, 4, 4, 1), int)),
            TypeError,
            "images",
        ),
        Bad(
            "rank",
            lambda: losses.patch_shuffle(jax.random.key(0), jnp.ones((4, 4))),
            ValueError,
            "images",
        ),
        Bad(
            "grid too big",
            lambda: losses.patch_shuffle(jax.random.key(0), jnp.ones((1, 2, 2, 1)), grid=4),
            ValueError,
            "grid",
        ),
    ],
    L + "confidence_drop_mask": [
        Edge(
            "ties kept, padding",
            lambda z: losses.confidence_drop_mask(z, z, where=ROWS),
            (EDGY,),
            grad_argnums=(),
            expect=_eq([True, True, True, False]),
        ),
        Bad(
            "shape",
            lambda: losses.confidence_drop_mask(EDGY, EDGY[:, :2]),
            ValueError,
            "original_logits",
        ),
    ],
    L + "symmetric_cross_entropy": [
        Edge(
            "edges, padding",
            lambda z: losses.symmetric_cross_entropy(z, z, where=ROWS),
            (CONFIDENT,),
        ),
        Bad(
            "alpha > 1",
            lambda: losses.symmetric_cross_entropy(EDGY, EDGY, alpha=1.5),
            ValueError,
            "alpha",
        ),
    ],
    L + "information_maximization": [
        Edge("edges, padding", lambda z: losses.information_maximization(z, where=ROWS), (EDGY,)),
        Edge("empty batch", losses.information_maximization, (EMPTY,), expect=_eq(0.0)),
        Bad(
            "prior shape",
            lambda: losses.information_maximization(EDGY, prior=jnp.ones(2)),
            ValueError,
            "prior",
        ),
        Bad(
            "prior negative",
            lambda: losses.information_maximization(EDGY, prior=jnp.array([1.5, -0.5, 0.0])),
            ValueError,
            "prior",
        ),
    ],
    L + "tent_loss": [
        Edge("edges, padding", lambda z: losses.tent_loss(z, where=ROWS), (EDGY,)),
        Edge("bf16", losses.tent_loss, (EDGY[:3].astype(jnp.bfloat16),), dtype=None),
        Bad("where dtype", lambda: losses.tent_loss(EDGY, where=jnp.ones(4)), TypeError, "where"),
        Bad("1-D logits", lambda: losses.tent_loss(jnp.zeros(3)), ValueError, "logits"),
    ],
    L + "EataState": [
        Edge("construct", lambda p: losses.EataState(p, jnp.array(True)), (jnp.ones(3) / 3,)),
    ],
    L + "eata_init": [
        Edge(
            "C = 1",
            losses.eata_init,
            (1,),
            grad_argnums=(),
            jit=False,
            expect=lambda s: np.testing.assert_array_equal(s.probs, [0.0]),
        ),
        Bad("C = 0", lambda: losses.eata_init(0), ValueError, "num_classes"),
    ],
    L + "eata_loss": [
        Edge(
            "edges, padding",
            lambda z: losses.eata_loss(z, EATA_STATE, eps=0.4, where=ROWS),
            (EDGY,),
        ),
        Edge(
            "fully filtered",
            lambda z: losses.eata_loss(z, WARM_STATE, eps=0.4),
            (UNIFORM,),
            grad_argnums=(),  # exact zero gradients: tests/test_tta.py
            expect=_zero_loss,
        ),
        Bad(
            "state size",
            lambda: losses.eata_loss(EDGY, losses.eata_init(2), eps=0.4),
            ValueError,
            "state",
        ),
        Bad("state kind", lambda: losses.eata_loss(EDGY, (), eps=0.4), TypeError, "state"),
        Bad(
            "e0 <= 0",
            lambda: losses.eata_loss(EDGY, EATA_STATE, eps=0.4, e0=-1.0),
            ValueError,
            "e0",
        ),
    ],
    L + "eata_update": [
        Edge(
            "nothing selected",
            lambda z: losses.eata_update(WARM_STATE, z, jnp.zeros(4, bool)).probs,
            (EDGY,),
            expect=_eq([0.2, 0.3, 0.5]),
        ),
        Bad(
            "selected shape",
            lambda: losses.eata_update(EATA_STATE, EDGY, ROWS[:2]),
            ValueError,
            "selected",
        ),
    ],
    L + "FisherState": [
        Edge("construct", lambda a: losses.FisherState(a, a), (jnp.ones(2),)),
    ],
    L + "fisher_diagonal": [
        Edge(
            "one batch, zero gradient",
            lambda p: (
                losses.fisher_diagonal(
                    lambda p, x: jax.tree.map(jnp.zeros_like, p), p, jnp.ones((1, 3))
                ).fisher
            ),
            (PARAMS,),
            grad_argnums=(),
        ),
        Bad(
            "no batches",
            lambda: losses.fisher_diagonal(lambda p, x: p, PARAMS, jnp.ones((0, 3))),
            ValueError,
            "batches",
        ),
    ],
    L + "fisher_penalty": [
        Edge(
            "bf16 params",
            lambda p: losses.fisher_penalty(p, FISHER, alpha=1.0),
            (jax.tree.map(lambda x: x.astype(jnp.bfloat16), PARAMS),),
            dtype=jnp.float32,
        ),
        Bad(
            "structure",
            lambda: losses.fisher_penalty({"w": PARAMS["w"]}, FISHER, alpha=1.0),
            ValueError,
            "params",
        ),
        Bad(
            "alpha", lambda: losses.fisher_penalty(PARAMS, FISHER, alpha=-1.0), ValueError, "alpha"
        ),
    ],
    L + "sar_loss": [
        Edge(
            "fully filtered, NaN padding",
            lambda z: losses.sar_loss(z, where=ROWS),
            (UNIFORM.at[3].set(jnp.nan),),
            grad_argnums=(),  # exact zero gradients: tests/test_tta.py
            expect=_zero_loss,
        ),
        Bad("e0", lambda: losses.sar_loss(EDGY, e0=0.0), ValueError, "e0"),
    ],
    L + "RecoveryState": [
        Edge("construct", lambda e: losses.RecoveryState(e, jnp.array(False)), (jnp.zeros(()),)),
    ],
    L + "recovery_init": [
        Edge("init", losses.recovery_init, (), grad_argnums=()),
    ],
    L + "recovery_update": [
        Edge(
            "reset at once",
            lambda l: losses.recovery_update(losses.recovery_init(), l, jnp.array(True))[1],
            (jnp.array(0.01),),
            grad_argnums=(),
            expect=_eq(True),
        ),
        Bad(
            "threshold",
            lambda: losses.recovery_update(
                losses.recovery_init(), 0.1, jnp.array(True), threshold=-1.0
            ),
            ValueError,
            "threshold",
        ),
        Bad(
            "valid dtype",
            lambda: losses.recovery_update(losses.recovery_init(), 0.1, 1.0),
            TypeError,
            "valid",
        ),
    ],
    L + "deyo_loss": [
        Edge("edges, padding", lambda z: losses.deyo_loss(z, z[::-1], where=ROWS), (EDGY,)),
        Edge(
            "fully filtered",
            lambda z: losses.deyo_loss(z, z),
            (CONFIDENT[:3],),
            grad_argnums=(),  # exact zero gradients: tests/test_tta.py
            expect=_zero_loss,
        ),
        Bad("tau_ent", lambda: losses.deyo_loss(EDGY, EDGY, tau_ent=0.0), ValueError, "tau_ent"),
    ],
    L + "open_set_loss": [
        Edge("edges, padding", lambda z: losses.open_set_loss(z, z, where=ROWS), (EDGY,)),
        Edge(
            "nothing kept",
            lambda z: losses.open_set_loss(z, z.at[:, 0].add(5.0)),
            (UNIFORM,),
            grad_argnums=(),  # exact zero gradients: tests/test_tta.py
            expect=_zero_loss,
        ),
        Bad(
            "diversity",
            lambda: losses.open_set_loss(EDGY, EDGY, diversity=-1.0),
            ValueError,
            "diversity",
        ),
    ],
    L + "mean_teacher_loss": [
        Edge(
            "edges, padding, augmented",
            lambda z: losses.mean_teacher_loss(z, z, augmented_logits=z, where=ROWS),
            (CONFIDENT,),
        ),
        Bad(
            "augmented shape",
            lambda: losses.mean_teacher_loss(EDGY, EDGY, augmented_logits=EDGY[:, :2]),
            ValueError,
            "augmented_logits",
        ),
    ],
    L + "tent_term": [
        Edge(
            "padding signal",
            lambda z: _term(losses.tent_term(), {"logits": z, "where": ROWS}),
            (EDGY,),
            grad_argnums=(),  # the gradient of tent_loss on EDGY is checked above
        ),
        Bad("name", lambda: losses.tent_term(name="a/b"), ValueError, "name"),
    ],
    L + "eata_term": [
        Edge(
            "state update",
            lambda z: (
                losses.eata_term(3, eps=0.4)({"logits": z, "where": ROWS}, EATA_STATE).state.probs
            ),
            (EDGY,),
        ),
        Bad("num_classes", lambda: losses.eata_term(0, eps=0.4), ValueError, "num_classes"),
    ],
    L + "fisher_term": [
        Edge(
            "params signal",
            lambda p: _term(losses.fisher_term(FISHER, alpha=2.0), {"params": p}),
            (PARAMS,),
        ),
        Bad("state kind", lambda: losses.fisher_term(PARAMS, alpha=1.0), TypeError, "state"),
    ],
    L + "sar_term": [
        Edge(
            "fully filtered",
            lambda z: _term(losses.sar_term(), {"logits": z}),
            (UNIFORM,),
            expect=_eq(0.0),
        ),
        Bad("weight", lambda: losses.sar_term(weight=-1.0), ValueError, "weight"),
    ],
    L + "deyo_term": [
        Edge(
            "edges",
            lambda z: _term(
                losses.deyo_term(), {"logits": z, "destroyed_logits": -z, "where": ROWS}
            ),
            (EDGY,),
            grad_argnums=(),  # deyo_loss's gradient on EDGY is checked above
        ),
        Bad("unknown option", lambda: losses.deyo_term(tau=1.0), TypeError, "deyo_kwargs"),
    ],
    L + "open_set_term": [
        Edge(
            "edges",
            lambda z: _term(
                losses.open_set_term(), {"logits": z, "original_logits": z, "where": ROWS}
            ),
            (EDGY,),
            grad_argnums=(),  # open_set_loss's gradient on EDGY is checked above
        ),
        Bad("diversity", lambda: losses.open_set_term(diversity=-0.5), ValueError, "diversity"),
    ],
    L + "mean_teacher_term": [
        Edge(
            "augmented",
            lambda z: _term(
                losses.mean_teacher_term(augmented=True),
                {"logits": z, "teacher_logits": 0.5 * z, "augmented_logits": z, "where": ROWS},
            ),
            (CONFIDENT,),
            grad_argnums=(),  # mean_teacher_loss's gradient on CONFIDENT is checked above
        ),
        Bad("alpha", lambda: losses.mean_teacher_term(alpha=2.0), ValueError, "alpha"),
    ],
    L + "im_term": [
        Edge(
            "edges",
            lambda z: _term(losses.im_term(), {"logits": z, "where": ROWS}),
            (EDGY,),
            grad_argnums=(),  # information_maximization's gradient on EDGY is checked above
        ),
        Bad("name", lambda: losses.im_term(name=""), ValueError, "name"),
    ],
    # ---- the loop
    A + "norm_params": [
        Edge("filter", lambda: adaptation.norm_params(NET), (), grad_argnums=(), jit=False),
        Bad(
            "no norm layer",
            lambda: adaptation.norm_params(nnx.Linear(2, 2, rngs=nnx.Rngs(0))),
            ValueError,
            "model",
        ),
        Bad(
            "everything excluded",
            lambda: adaptation.norm_params(NET, exclude=lambda p: True),
            ValueError,
            "model",
        ),
        Bad("not a module", lambda: adaptation.norm_params(object()), TypeError, "model"),
    ],
    A + "sharpness_aware": [
        Edge(
            "zero gradient",
            lambda g: adaptation.sharpness_aware(optax.sgd(1.0)).update(
                g, adaptation.sharpness_aware(optax.sgd(1.0)).init(g), g
            )[0],
            (jnp.zeros(3),),
            grad_argnums=(),
        ),
        Bad("rho", lambda: adaptation.sharpness_aware(optax.sgd(1.0), rho=-0.1), ValueError, "rho"),
    ],
    A + "Method": [
        Edge(
            "no terms",
            lambda: adaptation.Method((), optax.set_to_zero()),
            (),
            grad_argnums=(),
            jit=False,
            expect=_method_check(selector=None, predict="student"),
        ),
        Bad("terms", lambda: adaptation.Method(("x",), optax.sgd(0.1)), TypeError, "terms"),
        Bad("optimizer", lambda: adaptation.Method((), "adam"), TypeError, "optimizer"),
        Bad(
            "selector",
            lambda: adaptation.Method((losses.tent_term(),), optax.sgd(0.1), selector="x"),
            ValueError,
            "selector",
        ),
        Bad(
            "predict",
            lambda: adaptation.Method((), optax.sgd(0.1), predict="teacher"),
            ValueError,
            "predict",
        ),
        Bad(
            "restore_prob",
            lambda: adaptation.Method((), optax.sgd(0.1), restore_prob=2.0),
            ValueError,
            "restore_prob",
        ),
        Bad(
            "augment missing",
            lambda: adaptation.Method((), optax.sgd(0.1), augment_student=True),
            ValueError,
            "augment",
        ),
    ],
    A + "AdaptState": [
        Edge(
            "construct", lambda: adaptation.AdaptState(*([()] * 8)), (), grad_argnums=(), jit=False
        ),
    ],
    A + "Adapter": [
        Edge(
            "LayerNorm-only selection",
            lambda: adaptation.Adapter(NET, adaptation.tent(optax.sgd(0.1))).init(),
            (),
            grad_argnums=(),
            jit=False,
        ),
        Bad("method", lambda: adaptation.Adapter(NET, "tent"), TypeError, "method"),
        Bad(
            "model",
            lambda: adaptation.Adapter("net", adaptation.tent(optax.sgd(0.1))),
            TypeError,
            "model",
        ),
        Bad(
            "empty selection",
            lambda: adaptation.Adapter(
                NET,
                adaptation.Method((losses.tent_term(),), optax.sgd(0.1), wrt=nnx.Not(nnx.Param)),
            ),
            ValueError,
            "wrt",
        ),
    ],
    A + "Adapter.init": [
        Edge("init", TENT.init, (), grad_argnums=(), jit=False),
    ],
    A + "Adapter.reset": [
        Edge("reset", lambda: TENT.reset(TENT.init()), (), grad_argnums=(), jit=False),
        Bad("state", lambda: TENT.reset(()), TypeError, "state"),
    ],
    A + "Adapter.step": [
        Edge(
            "saturated logits",
            lambda x: TENT.step(TENT.init(), x),
            (HUGE,),
            grad_argnums=(),
            jit=False,
            expect=_adapted,
        ),
        Bad("state", lambda: TENT.step((), X), TypeError, "state"),
        Bad(
            "key needed",
            lambda: adaptation.Adapter(NET, adaptation.deyo(optax.sgd(0.1))).step(TENT.init(), X),
            ValueError,
            "key",
        ),
    ],
    A + "Adapter.run": [
        Edge(
            "f32 stream",
            lambda xs: TENT.run(TENT.init(), xs)[1],
            (jnp.stack([X, HUGE]),),
            grad_argnums=(),
            jit=False,
        ),
        Bad("xs", lambda: TENT.run(TENT.init(), jnp.zeros(())), ValueError, "xs"),
    ],
    A + "Adapter.predict": [
        Edge(
            "saturated", lambda x: TENT.predict(TENT.init(), x), (HUGE,), grad_argnums=(), jit=False
        ),
        Bad("state", lambda: TENT.predict(None, X), TypeError, "state"),
    ],
    A + "estimate_fisher": [
        Edge(
            "one batch",
            lambda xs: adaptation.estimate_fisher(NET, xs).fisher,
            (X[None],),
            grad_argnums=(),
            jit=False,
        ),
        Bad(
            "no batches",
            lambda: adaptation.estimate_fisher(NET, jnp.zeros((0, 4, 4, 4, 1))),
            ValueError,
            "batches",
        ),
    ],
    A + "tent": [
        _preset(
            lambda: adaptation.tent(optax.sgd(0.1)),
            episodic=False,
            skip_empty=False,
            selector="tent",
        ),
    ],
    A + "eata": [
        _preset(
            lambda: adaptation.eata(optax.sgd(0.1), 10, eps=0.4), skip_empty=True, selector="eata"
        ),
        Bad(
            "alpha missing",
            lambda: adaptation.eata(optax.sgd(0.1), 10, eps=0.4, fisher=FISHER),
            ValueError,
            "fisher_alpha",
        ),
    ],
    A + "sar": [
        _preset(
            lambda: adaptation.sar(optax.sgd(0.1)),
            sam_rho=0.05,
            recovery_threshold=0.2,
            skip_empty=False,
        ),
        Bad("rho", lambda: adaptation.sar(optax.sgd(0.1), rho=-1.0), ValueError, "sam_rho"),
    ],
    A + "deyo": [
        _preset(
            lambda: adaptation.deyo(optax.sgd(0.1)),
            skip_empty=True,
            subset_statistics=True,
            tau_ent=None,
        ),
        Bad("grid", lambda: adaptation.deyo(optax.sgd(0.1), grid=0), ValueError, "grid"),
    ],
    A + "open_set": [
        _preset(lambda: adaptation.open_set(optax.sgd(0.1)), original=True),
    ],
    A + "cotta": [
        _preset(
            lambda: adaptation.cotta(
                optax.adam(1e-3), augment=lambda k, x: x, anchor_threshold=0.92
            ),
            teacher_momentum=0.999,
            restore_prob=0.01,
            num_views=32,
            predict="teacher",
        ),
        Bad(
            "anchor",
            lambda: adaptation.cotta(
                optax.adam(1e-3), augment=lambda k, x: x, anchor_threshold=1.5
            ),
            ValueError,
            "anchor_threshold",
        ),
    ],
    A + "rmt": [
        _preset(
            lambda: adaptation.rmt(optax.adam(1e-3), augment=lambda k, x: x),
            teacher_momentum=0.999,
            predict="ensemble",
            augment_student=True,
        ),
        Bad("augment", lambda: adaptation.rmt(optax.adam(1e-3), augment=3), TypeError, "augment"),
    ],
    A + "shot_im": [
        _preset(lambda: adaptation.shot_im(optax.sgd(0.1)), selector="im"),
    ],
    A + "bn_adapt": [
        Edge(
            "no terms",
            adaptation.bn_adapt,
            (),
            grad_argnums=(),
            jit=False,
            expect=_method_check(terms=(), selector=None),
        ),
    ],
}
