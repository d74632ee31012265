"""Every public functional: jit / vmap / grad agree with eager (chex variants), sharding,
trace-time errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from jax.sharding import NamedSharding, PartitionSpec

import entreg

RNG = np.random.default_rng(0)
Z1 = RNG.normal(size=(8, 4, 7)) * 2
Z2 = RNG.normal(size=(8, 4, 7)) * 2
Z1[0, 0, 1] = -np.inf
WHERE = RNG.random((8, 4, 7)) > 0.2

FUNCTIONALS = {
    "entropy": lambda a, b, w: entreg.entropy(a, where=w),
    "cross_entropy": lambda a, b, w: entreg.cross_entropy(a, b, where=w),
    "cross_entropy_probs": lambda a, b, w: entreg.cross_entropy(a, target_probs=jax.nn.softmax(b)),
    "kl": lambda a, b, w: entreg.kl_divergence(a, b, where=w),
    "js": lambda a, b, w: entreg.js_divergence(a, b, where=w),
    "renyi": lambda a, b, w: entreg.renyi_entropy(a, 2.0, where=w),
    "tsallis": lambda a, b, w: entreg.tsallis_entropy(a, 1.0, where=w),
    "f_hellinger": lambda a, b, w: entreg.f_divergence(a, b, "squared_hellinger", where=w),
    "f_alpha": lambda a, b, w: entreg.f_divergence(a, b, "alpha", alpha=0.5, where=w),
    "binary": lambda a, b, w: entreg.binary_entropy(a, where=w),
    "kl_estimate": lambda a, b, w: entreg.kl_estimate(a[..., 0], b[..., 0], "k3"),
    "aggregate": lambda a, b, w: entreg.aggregate(b[..., 0], w[..., 0], "seq-mean-token-mean"),
}
ARGS = (Z1, Z2, WHERE)


def finite_sum(f):
    return lambda a, b, w: jnp.sum(jnp.where(jnp.isfinite(f(a, b, w)), f(a, b, w), 0.0))


class TransformsTest(chex.TestCase):
    """Each functional's value and gradient under chex's variants (jit, eager, device-placed
    arguments) agree with the eager value, and vmap over the leading axis with the batched call."""

    @chex.variants(with_jit=True, without_jit=True, with_device=True)
    @parameterized.named_parameters(*((name, name) for name in sorted(FUNCTIONALS)))
    def test_value_grad_and_vmap(self, name):
        f = FUNCTIONALS[name]
        total = finite_sum(f)
        eager = f(*ARGS)
        g_eager = jax.grad(total, argnums=(0, 1))(*ARGS)
        chex.assert_trees_all_close(self.variant(f)(*ARGS), eager, rtol=1e-12)
        g = self.variant(jax.grad(total, argnums=(0, 1)))(*ARGS)
        chex.assert_tree_all_finite(g)
        chex.assert_trees_all_close(g, g_eager, rtol=1e-10, atol=1e-14)
        mapped = jax.vmap(f)(*ARGS)
        if name == "aggregate":  # reduces everything it is given: one scalar per mapped slice
            chex.assert_shape(mapped, (Z1.shape[0],))
        else:
            chex.assert_trees_all_close(mapped, eager, rtol=1e-12)


def test_vmap_equals_batched_call():
    per_row = jax.vmap(lambda a, b: entreg.kl_divergence(a, b))(Z1, Z2)
    np.testing.assert_allclose(per_row, entreg.kl_divergence(Z1, Z2), rtol=1e-12)
    per_row = jax.vmap(lambda a: entreg.renyi_entropy(a, 0.5), in_axes=1, out_axes=1)(Z1)
    np.testing.assert_allclose(per_row, entreg.renyi_entropy(Z1, 0.5), rtol=1e-12)
    orders = jnp.array([0.5, 1.0, 2.0])
    by_order = jax.vmap(lambda a: entreg.renyi_entropy(Z1, a))(orders)
    for i, a in enumerate([0.5, 1.0, 2.0]):
        np.testing.assert_allclose(by_order[i], entreg.renyi_entropy(Z1, a), rtol=1e-12)


def test_sharded_equals_single_device():
    mesh = jax.make_mesh((8,), ("data",))
    sh = NamedSharding(mesh, PartitionSpec("data"))
    sharded = [jax.device_put(x, sh) for x in ARGS]
    for name, f in FUNCTIONALS.items():
        total = finite_sum(f)
        v_sh, g_sh = jax.jit(jax.value_and_grad(total, argnums=(0, 1)))(*sharded)
        v, g = jax.value_and_grad(total, argnums=(0, 1))(*ARGS)
        np.testing.assert_allclose(v_sh, v, rtol=1e-12, err_msg=name)
        for x, y in zip(g_sh, g, strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-14, err_msg=name)


def trace(f, *shapes_dtypes):
    """Runs f on abstract values only: errors raised here are trace-time errors."""
    return jax.eval_shape(f, *(jax.ShapeDtypeStruct(s, d) for s, d in shapes_dtypes))


F32 = jnp.float32


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: trace(entreg.entropy, ((3, 4), jnp.int32)), TypeError, "logits"),
        (lambda: trace(lambda z: entreg.entropy(z, axis=2), ((3, 4), F32)), ValueError, "axis"),
        (lambda: trace(lambda z: entreg.entropy(z, axis=1.0), ((3, 4), F32)), TypeError, "axis"),
        (lambda: trace(entreg.entropy, ((), F32)), ValueError, "logits"),
        (
            lambda: trace(lambda z, w: entreg.entropy(z, where=w), ((3, 4), F32), ((3, 4), F32)),
            TypeError,
            "where",
        ),
        (
            lambda: trace(
                lambda z, w: entreg.entropy(z, where=w), ((3, 4), F32), ((4,), jnp.bool_)
            ),
            ValueError,
            "where",
        ),
        (
            lambda: trace(
                lambda z, w: entreg.entropy(z, where=w), ((3, 4), F32), ((2, 4), jnp.bool_)
            ),
            ValueError,
            "where",
        ),
        (lambda: trace(entreg.kl_divergence, ((3, 4), F32), ((3, 5), F32)), ValueError, "q_logits"),
        (
            lambda: trace(entreg.js_divergence, ((3, 4), F32), ((3, 4), jnp.int8)),
            TypeError,
            "q_logits",
        ),
        (
            lambda: trace(lambda z: entreg.renyi_entropy(z, -1.0), ((3, 4), F32)),
            ValueError,
            "order",
        ),
        (
            lambda: trace(lambda z: entreg.tsallis_entropy(z, float("nan")), ((3, 4), F32)),
            ValueError,
            "order",
        ),
        (
            lambda: trace(lambda z, a: entreg.renyi_entropy(z, a), ((3, 4), F32), ((2,), F32)),
            ValueError,
            "order",
        ),
        (
            lambda: trace(lambda z: entreg.f_divergence(z, z, "hellinger"), ((3, 4), F32)),
            ValueError,
            "kind",
        ),
        (
            lambda: trace(lambda z: entreg.f_divergence(z, z, "alpha"), ((3, 4), F32)),
            ValueError,
            "alpha",
        ),
        (
            lambda: trace(lambda z: entreg.f_divergence(z, z, "kl", alpha=0.5), ((3, 4), F32)),
            ValueError,
            "alpha",
        ),
        (
            lambda: trace(lambda z: entreg.cross_entropy(z), ((3, 4), F32)),
            ValueError,
            "target_logits",
        ),
        (
            lambda: trace(
                lambda z, t: entreg.cross_entropy(z, target_probs=t), ((3, 4), F32), ((4, 3), F32)
            ),
            ValueError,
            "target_probs",
        ),
        (lambda: trace(entreg.binary_entropy, ((3,), jnp.int32)), TypeError, "logit"),
    ],
)
def test_bad_input_errors_at_trace_time(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
