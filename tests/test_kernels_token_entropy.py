"""linear_log_probs_and_entropy: one suite for every implementation, against a float64 numpy
oracle of the unfused definition."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from entreg import kernels
from tests.oracles import bf16, f64

IMPLS = [
    "xla",
    "triton",
    "reference",
]  # triton and mosaic kernels run in interpret mode / emulation off-GPU


def oracle(h, w, y, tau=1.0, valid=None):
    z = np.asarray(h, np.float64) @ np.asarray(w, np.float64) / tau
    if valid is not None:
        z[..., valid:] = -np.inf
    m = z.max(-1, keepdims=True)
    lse = m[..., 0] + np.log(np.exp(z - m).sum(-1))
    p = np.exp(z - lse[..., None])
    logp = np.take_along_axis(z, y[..., None], -1)[..., 0] - lse
    ent = -np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0).sum(-1)
    return logp, ent


def inputs(t=6, hdim=8, v=37, scale=1.0, seed=0, batch=(2,)):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(*batch, t, hdim))
    w = rng.normal(size=(hdim, v)) * scale
    y = rng.integers(0, v, size=(*batch, t))
    return h, w, y


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("v, chunk", [(37, 8), (5, 128), (1, 4)])
def test_matches_oracle_odd_vocab_and_chunks(impl, v, chunk):
    h, w, y = inputs(v=v)
    got = kernels.linear_log_probs_and_entropy(h, w, y, chunk_size=chunk, implementation=impl)
    want = oracle(h, w, y)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("chunk", [16, 8])  # 8 divides V = 40: only valid_vocab masks columns
def test_temperature_and_masked_vocabulary(impl, chunk):
    h, w, y = inputs(v=40)
    y = np.minimum(y, 29)
    got = kernels.linear_log_probs_and_entropy(
        h, w, y, temperature=0.6, valid_vocab=30, chunk_size=chunk, implementation=impl
    )
    want = oracle(h, w, y, tau=0.6, valid=30)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("offset", [1e4, -1e4])
def test_extreme_logits(impl, offset):
    """Logits around +-1e4 (a constant offset column-wise keeps the distribution); one-hot rows."""
    h, w, y = inputs(v=33, scale=3.0)
    h = np.concatenate([h, np.ones((*h.shape[:-1], 1))], -1)
    w = np.concatenate([w, np.full((1, 33), offset)], 0)
    got = kernels.linear_log_probs_and_entropy(h, w, y, chunk_size=8, implementation=impl)
    want = oracle(h, w, y)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-9, atol=1e-9)
    # Near one-hot: one column 1e4 above the rest.
    w2 = np.zeros((h.shape[-1], 9))
    w2[-1, 3] = 1e4
    lp, ent = kernels.linear_log_probs_and_entropy(h, w2, np.full(y.shape, 3), implementation=impl)
    np.testing.assert_allclose(lp, 0.0, atol=1e-12)
    np.testing.assert_allclose(ent, 0.0, atol=1e-12)


def test_float32_centred_accumulator_at_large_offset():
    """Float32 with logits offset by +1e4: the centred accumulator matches the float64 oracle."""
    h, w, y = inputs(v=300, seed=3)
    h = np.concatenate([h, np.ones((*h.shape[:-1], 1))], -1)
    w = np.concatenate([w, np.full((1, 300), 1e4)], 0)
    got = kernels.linear_log_probs_and_entropy(
        jnp.asarray(h, jnp.float32), jnp.asarray(w, jnp.float32), y, chunk_size=64
    )
    ref = kernels.linear_log_probs_and_entropy(
        jnp.asarray(h, jnp.float32), jnp.asarray(w, jnp.float32), y, implementation="reference"
    )
    want = oracle(np.asarray(h, np.float32), np.asarray(w, np.float32), y)
    assert got[1].dtype == jnp.float32
    err = np.abs(np.asarray(got[1]) - want[1]).max()
    assert err <= np.abs(np.asarray(ref[1]) - want[1]).max() * 2 + 1e-5
    assert err < 5e-3


def test_bf16_inputs_accumulate_in_float32():
    h, w, y = inputs(v=50, seed=4)
    hb, wb = jnp.asarray(h, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16)
    lp, ent = kernels.linear_log_probs_and_entropy(hb, wb, y, chunk_size=16)
    assert lp.dtype == ent.dtype == jnp.float32
    want = oracle(np.asarray(hb.astype(jnp.float32)), np.asarray(wb.astype(jnp.float32)), y)
    np.testing.assert_allclose(lp, want[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ent, want[1], rtol=1e-4, atol=1e-4)
    g = jax.grad(lambda a, b: kernels.linear_log_probs_and_entropy(a, b, y)[1].sum(), (0, 1))(
        hb, wb
    )
    assert g[0].dtype == g[1].dtype == jnp.bfloat16
    assert all(np.isfinite(np.asarray(x, np.float32)).all() for x in g)


def test_out_of_range_label_gets_minus_inf_and_finite_gradient():
    h, w, y = inputs(v=20)
    y[0, 0] = 25
    lp, _ = kernels.linear_log_probs_and_entropy(h, w, y, valid_vocab=18, chunk_size=8)
    assert lp[0, 0] == -np.inf
    y[0, 1] = 19  # a padded column
    lp, _ = kernels.linear_log_probs_and_entropy(h, w, y, valid_vocab=18, chunk_size=8)
    assert lp[0, 1] == -np.inf
    g = jax.grad(
        lambda a: jnp.where(
            jnp.isfinite(lp),
            kernels.linear_log_probs_and_entropy(a, w, y, valid_vocab=18, chunk_size=8)[0],
            0.0,
        ).sum()
    )(jnp.asarray(h))
    assert np.isfinite(np.asarray(g)).all()


@pytest.mark.parametrize("impl", IMPLS)
def test_gradients_of_both_outputs(impl):
    h, w, y = inputs(t=3, hdim=4, v=11, batch=())
    y = np.minimum(y, 8)

    def f(a, b, tau):
        lp, ent = kernels.linear_log_probs_and_entropy(
            a, b, y, temperature=tau, valid_vocab=9, chunk_size=4, implementation=impl
        )
        return 0.7 * lp + jnp.arange(1.0, 4.0) * ent

    check_grads(jax.jit(f), (h, w, 0.8), order=1, modes=["rev"])


@pytest.mark.parametrize("impl", ["xla", "triton"])
@pytest.mark.parametrize("v", [45, 48])  # 16 divides 48: the sweep masks no column
def test_fused_gradient_equals_reference_gradient(impl, v):
    h, w, y = inputs(v=v, seed=5)

    def loss(impl, a, b, tau):
        lp, ent = kernels.linear_log_probs_and_entropy(
            a, b, y, temperature=tau, chunk_size=16, implementation=impl
        )
        return jnp.sum(lp * 0.3) - jnp.sum(ent * jnp.arange(6.0))

    g1 = jax.grad(lambda *a: loss(impl, *a), (0, 1, 2))(h, w, 1.3)
    g2 = jax.grad(lambda *a: loss("reference", *a), (0, 1, 2))(h, w, 1.3)
    for a, b in zip(g1, g2, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_jit_vmap_and_traced_temperature():
    h, w, y = inputs(batch=(3,))
    f = jax.jit(
        lambda a, lab, tau: kernels.linear_log_probs_and_entropy(
            a, w, lab, temperature=tau, chunk_size=8
        )
    )
    batched = jax.vmap(f, in_axes=(0, 0, None))(h, y, 0.9)
    want = oracle(h, w, y, tau=0.9)
    np.testing.assert_allclose(batched, want, rtol=1e-10)


def test_errors_name_the_argument():
    h, w, y = inputs()
    with pytest.raises(ValueError, match="weight"):
        kernels.linear_log_probs_and_entropy(h, w.T, y)
    with pytest.raises(TypeError, match="labels"):
        kernels.linear_log_probs_and_entropy(h, w, y.astype(float))
    with pytest.raises(ValueError, match="labels"):
        kernels.linear_log_probs_and_entropy(h, w, y[:, :2])
    with pytest.raises(ValueError, match="valid_vocab"):
        kernels.linear_log_probs_and_entropy(h, w, y, valid_vocab=0)
    with pytest.raises(ValueError, match="chunk_size"):
        kernels.linear_log_probs_and_entropy(h, w, y, chunk_size=0)
    with pytest.raises(ValueError, match="temperature"):
        kernels.linear_log_probs_and_entropy(h, w, y, temperature=0.0)
    with pytest.raises(ValueError, match="implementation"):
        kernels.linear_log_probs_and_entropy(h, w, y, implementation="cuda")
    with pytest.raises(TypeError, match="hidden"):
        kernels.linear_log_probs_and_entropy(h.astype(int), w, y)


@pytest.mark.parametrize(
    ("impl", "chunk", "valid"),
    # chunk 4 divides each device's 8 columns: only the padding past valid_vocab is masked,
    # and with valid_vocab = 64 nothing is.
    [("xla", 3, 55), ("xla", 4, 55), ("xla", 4, 64), ("reference", 3, 55)],
)
def test_vocab_parallel_on_8_devices_equals_single_device(impl, chunk, valid):
    """W [H, V] sharded over 8 devices by columns (with valid_vocab 55, the last shard all
    padding): values and gradients (h, W, tau) equal the single-device kernel's."""
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    mesh = Mesh(np.array(jax.devices()[:8]), ("vocab",))
    h, w, y = inputs(t=5, hdim=6, v=64, seed=7)
    y = np.minimum(y, 54)
    kw = dict(temperature=0.7, valid_vocab=valid, chunk_size=chunk)

    def loss(fn, a, b, tau):
        lp, ent = fn(a, b, tau)
        return jnp.sum(lp * 0.3) + jnp.sum(ent * jnp.arange(5.0)), (lp, ent)

    def single(a, b, tau):
        return kernels.linear_log_probs_and_entropy(a, b, y, **{**kw, "temperature": tau})

    sharded = jax.shard_map(
        lambda a, b, tau: kernels.linear_log_probs_and_entropy(
            a, b, y, **{**kw, "temperature": tau}, vocab_axis="vocab", implementation=impl
        ),
        mesh=mesh,
        in_specs=(P(), P(None, "vocab"), P()),
        out_specs=P(),
    )
    grad = jax.grad(loss, (1, 2, 3), has_aux=True)
    (gs, (lp1, ent1)), (gp, (lp8, ent8)) = (
        jax.jit(lambda *a, f=f: grad(f, *a))(h, w, 0.7) for f in (single, sharded)
    )
    np.testing.assert_allclose(lp8, lp1, rtol=1e-12)
    np.testing.assert_allclose(ent8, ent1, rtol=1e-12)
    np.testing.assert_allclose(lp8, oracle(h, w, y, 0.7, valid)[0], rtol=1e-10)
    for a, b in zip(gp, gs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    if valid < 64:
        assert np.abs(gp[1][:, valid:]).max() == 0.0  # padded columns get no gradient


def test_vocab_axis_must_be_in_scope():
    h, w, y = inputs()
    with pytest.raises(ValueError, match="vocab_axis"):
        kernels.linear_log_probs_and_entropy(h, w, y, vocab_axis="vocab")
    with pytest.raises(ValueError, match="vocab_axis"):
        kernels.linear_log_probs_and_entropy(h, w, y, vocab_axis="v", implementation="triton")


def test_triton_kernels_lower_for_cuda(monkeypatch):
    """Without a GPU: the Pallas forward, dh and dW kernels lower to Triton calls for CUDA
    (cross-platform lowering; compiling and running them needs the GPU)."""
    plt = pytest.importorskip("jax.experimental.pallas.triton")
    from entreg.kernels import _triton

    monkeypatch.setattr(
        _triton, "compiler_params", lambda: {"compiler_params": plt.CompilerParams()}
    )
    h = jax.ShapeDtypeStruct((256, 64), jnp.bfloat16)
    w = jax.ShapeDtypeStruct((64, 1000), jnp.bfloat16)
    y = jax.ShapeDtypeStruct((256,), jnp.int32)

    def loss(a, b, lab):
        lp, ent = kernels.linear_log_probs_and_entropy(
            a, b, lab, chunk_size=256, implementation="triton"
        )
        return lp.sum() + ent.sum()

    lowered = jax.jit(jax.grad(loss, (0, 1))).trace(h, w, y).lower(lowering_platforms=("cuda",))
    assert lowered.as_text().count("xla.gpu.triton") == 3


# implementation="mosaic": bf16 / f16 only, so its tests compare with the float64 oracle on the
# bf16-rounded inputs (the emulation runs the kernel bodies on CPU; see kernels/_mosaic.py).


def test_mosaic_matches_oracle_odd_sizes_temperature_and_masked_vocabulary():
    """T = 70, H = 72, V = 201: none a whole 64-tile; columns >= 190 masked; an invalid label."""
    h, w, y = inputs(t=70, hdim=72, v=201, scale=0.3, seed=10, batch=())
    y[3] = 195  # a masked column: log-prob -inf, no gradient
    h, w = bf16(h, w)
    lp, ent = kernels.linear_log_probs_and_entropy(
        h, w, y, temperature=0.7, valid_vocab=190, implementation="mosaic"
    )
    want = oracle(*f64(h, w), y, tau=0.7, valid=190)
    assert lp.dtype == ent.dtype == jnp.float32 and lp[3] == -np.inf
    np.testing.assert_allclose(lp, want[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ent, want[1], rtol=1e-5, atol=1e-5)


def test_mosaic_gradients_of_both_outputs_match_float64_reference():
    h, w, y = inputs(t=70, hdim=72, v=130, scale=0.3, seed=11, batch=())
    h, w = bf16(h, w)
    r = np.random.default_rng(12)
    gl, ge = r.normal(size=70), r.normal(size=70)

    def loss(impl):
        def f(a, b, tau):
            lp, ent = kernels.linear_log_probs_and_entropy(
                a, b, y, temperature=tau, valid_vocab=120, implementation=impl
            )
            return jnp.sum(lp * gl) + jnp.sum(ent * ge)

        return f

    y[y >= 120] = 5
    got = jax.jit(jax.grad(loss("mosaic"), (0, 1, 2)))(h, w, 0.8)
    want = jax.grad(loss("reference"), (0, 1, 2))(*f64(h, w), 0.8)
    for g, x in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g, np.float64), x, atol=1e-2 * np.abs(x).max())


@pytest.mark.parametrize("offset", [1e4, -1e4])
def test_mosaic_extreme_logits(offset):
    """A constant +-1e4 on every logit (exact in bf16 as 100 x 100) leaves log-probs and
    entropy unchanged up to float32 spacing at 1e4."""
    h, w, y = inputs(t=10, hdim=8, v=70, scale=2.0, seed=13, batch=())
    h = np.concatenate([h, np.full((10, 1), 100.0)], -1)
    w = np.concatenate([w, np.full((1, 70), offset / 100)], 0)
    h, w = bf16(h, w)
    lp, ent = kernels.linear_log_probs_and_entropy(h, w, y, implementation="mosaic")
    want = oracle(*f64(h, w), y)
    np.testing.assert_allclose(lp, want[0], atol=5e-3)
    np.testing.assert_allclose(ent, want[1], atol=5e-3)
    g = jax.jit(
        jax.grad(
            lambda a: kernels.linear_log_probs_and_entropy(a, w, y, implementation="mosaic")[
                1
            ].sum()
        )
    )(h)
    assert np.isfinite(np.asarray(g, np.float32)).all()


def test_mosaic_errors_name_the_argument():
    h, w, y = inputs(batch=())
    with pytest.raises(TypeError, match="hidden"):
        kernels.linear_log_probs_and_entropy(h, w, y, implementation="mosaic")
    with pytest.raises(TypeError, match="weight"):
        kernels.linear_log_probs_and_entropy(
            *bf16(h), w.astype(np.float16), y, implementation="mosaic"
        )
    with pytest.raises(ValueError, match="vocab_axis"):
        kernels.linear_log_probs_and_entropy(
            *bf16(h, w), y, vocab_axis="v", implementation="mosaic"
        )


def test_mosaic_kernels_lower_for_cuda(monkeypatch):
    """Without a GPU: the forward and the scatter-add backward lower to Mosaic GPU calls."""
    from entreg.kernels import _mosaic

    monkeypatch.setattr(_mosaic, "platform", _mosaic.Hopper)
    h = jax.ShapeDtypeStruct((200, 96), jnp.bfloat16)
    w = jax.ShapeDtypeStruct((96, 1000), jnp.bfloat16)
    y = jax.ShapeDtypeStruct((200,), jnp.int32)

    def loss(a, b, lab):
        lp, ent = kernels.linear_log_probs_and_entropy(a, b, lab, implementation="mosaic")
        return lp.sum() + ent.sum()

    lowered = jax.jit(jax.grad(loss, (0, 1))).trace(h, w, y).lower(lowering_platforms=("cuda",))
    assert lowered.as_text().count("custom_call @mosaic_gpu") == 2
