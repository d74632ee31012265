"""attention_with_entropy: one suite for every implementation, against a float64 numpy oracle
of the materialized attention map."""

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
DENSE_MASK_IMPLS = ["xla", "reference"]


def oracle(q, k, v, mask=None, causal=False, scale=None):
    """out [B, T, N, D] and entropy [B, N, T] in float64; rows with no visible key give 0."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    b, t, n, d = q.shape
    g = n // k.shape[2]
    k, v = np.repeat(k, g, axis=2), np.repeat(v, g, axis=2)
    scale = 1 / np.sqrt(d) if scale is None else scale
    s = np.einsum("bqnd,bknd->bnqk", q, k) * scale
    vis = np.ones(s.shape, bool)
    if mask is not None:
        vis &= np.broadcast_to(mask, s.shape)
    if causal:
        vis &= np.tril(np.ones(s.shape[-2:], bool))
    s = np.where(vis, s, -np.inf)
    m = s.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    e = np.where(vis, np.exp(s - m), 0)
    z = e.sum(-1, keepdims=True)
    p = e / np.where(z > 0, z, 1)
    logp = np.where(p > 0, np.log(np.where(p > 0, p, 1)), 0)
    return np.einsum("bnqk,bknd->bqnd", p, v), -(p * logp).sum(-1)


def qkv(t=7, s=9, n=4, kv=2, d=8, b=2, seed=0, scale=1.0):
    r = np.random.default_rng(seed)
    return (
        r.normal(size=(b, t, n, d)) * scale,
        r.normal(size=(b, s, kv, d)),
        r.normal(size=(b, s, kv, d)),
    )


def padding_mask(b=2, s=9, lengths=(9, 4)):
    return (np.arange(s)[None, :] < np.array(lengths)[:, None])[:, None, None, :]


def assert_close(got, want, rtol=1e-10, atol=1e-12):
    np.testing.assert_allclose(got[0], want[0], rtol=rtol, atol=atol)
    np.testing.assert_allclose(got[1], want[1], rtol=rtol, atol=atol)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("blocks", [(3, 4), (512, 512), (1, 2)])
def test_matches_oracle_odd_lengths_gqa_and_masks(impl, causal, blocks):
    q, k, v = qkv()
    kw = dict(is_causal=causal, block_q=blocks[0], block_k=blocks[1], implementation=impl)
    assert_close(kernels.attention_with_entropy(q, k, v, **kw), oracle(q, k, v, causal=causal))
    if impl == "triton":
        return  # causal only; a dense mask raises (test_errors_name_the_argument)
    pad = padding_mask()
    got = kernels.attention_with_entropy(q, k, v, mask=pad, **kw)
    assert_close(got, oracle(q, k, v, pad, causal))


@pytest.mark.parametrize("impl", DENSE_MASK_IMPLS)
def test_full_mask_with_fully_masked_rows(impl):
    q, k, v = qkv(t=6, s=6)
    mask = np.random.default_rng(1).random((2, 4, 6, 6)) < 0.5
    mask[0, 1, 2] = False  # a query with no visible key
    mask[1, :, 5] = False
    out, ent = kernels.attention_with_entropy(
        q, k, v, mask=mask, is_causal=True, block_q=4, block_k=4, implementation=impl
    )
    assert_close((out, ent), oracle(q, k, v, mask, True))
    assert np.all(out[0, 2, 1] == 0) and ent[0, 1, 2] == 0 and np.all(ent[1, :, 5] == 0)
    assert np.all(ent >= -1e-12) and np.all(ent <= np.log(6) + 1e-12)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_extreme_logits_and_one_hot_rows(impl, scale):
    """Logits of order +-1e4: rows are (near) one-hot, entropy ~0, no NaN in value or grad."""
    q, k, v = qkv(t=5, s=11, seed=2)
    kw = dict(scale=scale, block_q=2, block_k=4, implementation=impl)
    got = kernels.attention_with_entropy(q, k, v, **kw)
    assert_close(got, oracle(q, k, v, scale=scale), rtol=1e-9, atol=1e-9)
    g = jax.jit(jax.grad(lambda a: kernels.attention_with_entropy(a, k, v, **kw)[1].sum()))(q)
    assert np.isfinite(g).all()


@pytest.mark.parametrize("impl", IMPLS)
def test_bf16_inputs(impl):
    q, k, v = (jnp.asarray(x, jnp.bfloat16) for x in qkv(t=16, s=16, seed=3))
    out, ent = kernels.attention_with_entropy(
        q, k, v, is_causal=True, block_q=8, block_k=8, implementation=impl
    )
    assert out.dtype == jnp.bfloat16 and ent.dtype == jnp.float32
    want = oracle(*(np.asarray(x, np.float64) for x in (q, k, v)), causal=True)
    # The output is rounded to bf16: half an ulp at |out| <= 2.2 is 2^-8 * 2 = 7.8e-3 (measured
    # 3.9e-3). The entropy accumulates in float32 over 16 keys (measured 3e-7 to 7e-7).
    assert np.abs(want[0]).max() < 2.2
    np.testing.assert_allclose(np.asarray(out, np.float64), want[0], atol=8e-3)
    np.testing.assert_allclose(ent, want[1], atol=2e-6)
    g = jax.jit(
        jax.grad(lambda a: kernels.attention_with_entropy(a, k, v, implementation=impl)[1].sum())
    )(q)
    assert g.dtype == jnp.bfloat16 and np.isfinite(np.asarray(g, np.float32)).all()


@pytest.mark.parametrize("impl", IMPLS)
def test_gradients_of_both_outputs(impl):
    q, k, v = qkv(t=4, s=5, n=2, kv=1, d=3, b=1, seed=4)
    mask = None
    if impl != "triton":
        mask = np.ones((1, 1, 4, 5), bool)
        mask[..., 1, :] = False  # a fully masked row: zero gradient, checked by differences
    w = np.random.default_rng(5).normal(size=(1, 4, 2, 3))

    def f(a, b, c):
        out, ent = kernels.attention_with_entropy(
            a, b, c, mask=mask, is_causal=True, block_q=2, block_k=2, implementation=impl
        )
        return jnp.sum(out * w) + jnp.sum(ent * jnp.arange(1.0, 5.0))

    check_grads(jax.jit(f), (q, k, v), order=1, modes=["rev"])


@pytest.mark.parametrize("impl, masked", [("xla", True), ("triton", False)])
def test_blockwise_gradient_equals_reference_gradient(impl, masked):
    q, k, v = qkv(t=9, s=10, seed=6)
    mask = padding_mask(s=10, lengths=(10, 3)) if masked else None
    w = np.random.default_rng(7).normal(size=q.shape)

    def loss(impl, a, b, c):
        out, ent = kernels.attention_with_entropy(
            a, b, c, mask=mask, is_causal=True, block_q=4, block_k=3, implementation=impl
        )
        return jnp.sum(out * w) - 0.5 * jnp.sum(ent)

    g1 = jax.jit(jax.grad(lambda *a: loss(impl, *a), (0, 1, 2)))(q, k, v)
    g2 = jax.jit(jax.grad(lambda *a: loss("reference", *a), (0, 1, 2)))(q, k, v)
    for a, b in zip(g1, g2, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_matches_jax_attention_and_entreg_attention_entropy():
    import entreg

    q, k, v = qkv(t=6, s=6, n=2, kv=2)
    out, ent = kernels.attention_with_entropy(q, k, v, is_causal=True, block_q=4, block_k=4)
    np.testing.assert_allclose(
        out, jax.nn.dot_product_attention(q, k, v, is_causal=True), rtol=1e-6, atol=1e-6
    )
    s = jnp.einsum("bqnd,bknd->bnqk", q, k) / np.sqrt(8)
    np.testing.assert_allclose(ent, entreg.attention_entropy(s, causal=True), rtol=1e-12)


def test_jit_vmap_and_unbatched_inputs():
    q, k, v = qkv(b=3)
    f = jax.jit(lambda a, b, c: kernels.attention_with_entropy(a, b, c, block_q=4, block_k=4))
    out, ent = jax.vmap(f)(q, k, v)  # unbatched [T, N, D] per example
    assert out.shape == (3, 7, 4, 8) and ent.shape == (3, 4, 7)
    assert_close((out, ent), oracle(q, k, v))
    ref = kernels.reference_attention_with_entropy(q[0], k[0], v[0])
    assert_close(ref, (out[0], ent[0]))


def test_no_quadratic_temporaries():
    """The compiled forward+backward holds less than one [B, N, T, S] float32 map."""
    q, k, v = (jnp.ones((1, 512, 2, 16), jnp.float32),) * 3

    def loss(a, b, c):
        out, ent = kernels.attention_with_entropy(a, b, c, block_q=64, block_k=64)
        return out.sum() + ent.sum()

    temp = jax.jit(jax.grad(loss, (0, 1, 2))).lower(q, k, v).compile().memory_analysis()
    assert temp.temp_size_in_bytes < 2 * 512 * 512 * 4


def test_errors_name_the_argument():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="key"):
        kernels.attention_with_entropy(q, k[..., :4], v[..., :4])
    with pytest.raises(ValueError, match="key"):
        kernels.attention_with_entropy(q, np.concatenate([k] * 3, 2), np.concatenate([v] * 3, 2))
    with pytest.raises(TypeError, match="mask"):
        kernels.attention_with_entropy(q, k, v, mask=padding_mask().astype(int))
    with pytest.raises(ValueError, match="mask"):
        kernels.attention_with_entropy(q, k, v, mask=np.ones((2, 4, 7, 8), bool))
    with pytest.raises(ValueError, match="block_k"):
        kernels.attention_with_entropy(q, k, v, block_k=0)
    with pytest.raises(TypeError, match="query"):
        kernels.attention_with_entropy(q.astype(int), k, v)
    with pytest.raises(ValueError, match="implementation"):
        kernels.attention_with_entropy(q, k, v, implementation="cuda")
    with pytest.raises(ValueError, match="mask"):
        kernels.attention_with_entropy(q, k, v, mask=padding_mask(), implementation="triton")


def test_triton_kernels_lower_for_cuda(monkeypatch):
    """Without a GPU: the Pallas forward and both backward kernels lower to Triton calls for
    CUDA (cross-platform lowering; compiling and running them needs the GPU)."""
    plt = pytest.importorskip("jax.experimental.pallas.triton")
    from entreg.kernels import _triton

    monkeypatch.setattr(
        _triton, "compiler_params", lambda: {"compiler_params": plt.CompilerParams()}
    )
    x = jax.ShapeDtypeStruct((1, 128, 2, 64), jnp.bfloat16)

    def loss(a, b, c):
        out, ent = kernels.attention_with_entropy(
            a, b, c, is_causal=True, block_q=64, block_k=64, implementation="triton"
        )
        return out.astype(jnp.float32).sum() + ent.sum()

    lowered = jax.jit(jax.grad(loss, (0, 1, 2))).trace(x, x, x).lower(lowering_platforms=("cuda",))
    assert lowered.as_text().count("xla.gpu.triton") == 3


# implementation="mosaic": bf16 / f16 only, so its tests compare with the float64 oracle on the
# bf16-rounded inputs (the emulation runs the kernel bodies on CPU; see kernels/_mosaic.py).


@pytest.mark.parametrize("causal", [False, True])
def test_mosaic_matches_oracle_with_padding_gqa_and_odd_head_dim(causal):
    """T = 70, S = 100 (not whole 64-tiles), 4 query heads on 2 key heads, D = 40 (padded)."""
    q, k, v = bf16(*qkv(t=70, s=100, n=4, kv=2, d=40, b=1, seed=6))
    out, ent = kernels.attention_with_entropy(q, k, v, is_causal=causal, implementation="mosaic")
    want = oracle(*f64(q, k, v), causal=causal)
    assert out.dtype == jnp.bfloat16 and ent.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out, np.float64), want[0], atol=2e-2)
    np.testing.assert_allclose(ent, want[1], atol=2e-5)


@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_mosaic_extreme_logits(scale):
    q, k, v = bf16(*qkv(t=20, s=30, n=2, kv=2, d=16, b=1, seed=7))
    out, ent = kernels.attention_with_entropy(q, k, v, scale=scale, implementation="mosaic")
    want = oracle(*f64(q, k, v), scale=scale)
    np.testing.assert_allclose(np.asarray(out, np.float64), want[0], atol=2e-2)
    np.testing.assert_allclose(ent, want[1], atol=1e-3)
    g = jax.jit(
        jax.grad(
            lambda a: kernels.attention_with_entropy(a, k, v, scale=scale, implementation="mosaic")[
                1
            ].sum()
        )
    )(q)
    assert np.isfinite(np.asarray(g, np.float32)).all()


def test_mosaic_gradients_of_both_outputs_match_float64_reference():
    q, k, v = bf16(*qkv(t=70, s=80, n=2, kv=1, d=32, b=1, seed=8))
    r = np.random.default_rng(9)
    w, gw = r.normal(size=(1, 70, 2, 32)), r.normal(size=(1, 2, 70))

    def loss(impl):
        def f(a, b, c):
            out, ent = kernels.attention_with_entropy(a, b, c, is_causal=True, implementation=impl)
            return jnp.sum(out.astype(jnp.float64) * w) + jnp.sum(ent * gw)

        return f

    got = jax.jit(jax.grad(loss("mosaic"), (0, 1, 2)))(q, k, v)
    want = jax.grad(loss("reference"), (0, 1, 2))(*f64(q, k, v))
    for g, x in zip(got, want, strict=True):
        assert g.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(g, np.float64), x, atol=2e-2 * np.abs(x).max())


def test_mosaic_errors_name_the_argument():
    q, k, v = qkv(t=8, s=8)
    with pytest.raises(TypeError, match="query"):
        kernels.attention_with_entropy(q, k, v, implementation="mosaic")
    with pytest.raises(ValueError, match="mask"):
        kernels.attention_with_entropy(
            *bf16(q, k, v), mask=padding_mask(s=8, lengths=(8, 4)), implementation="mosaic"
        )


def test_mosaic_kernels_lower_for_cuda(monkeypatch):
    """Without a GPU: the forward, dq and dk/dv kernels lower to Mosaic GPU calls for CUDA
    (layouts, tiling and swizzling are checked here; compiling to PTX needs the GPU)."""
    from entreg.kernels import _mosaic

    monkeypatch.setattr(_mosaic, "platform", _mosaic.Hopper)
    x = jax.ShapeDtypeStruct((1, 200, 2, 64), jnp.bfloat16)

    def loss(a, b, c):
        out, ent = kernels.attention_with_entropy(a, b, c, is_causal=True, implementation="mosaic")
        return out.astype(jnp.float32).sum() + ent.sum()

    lowered = jax.jit(jax.grad(loss, (0, 1, 2))).trace(x, x, x).lower(lowering_platforms=("cuda",))
    assert lowered.as_text().count("custom_call @mosaic_gpu") == 3


def test_mosaic_needs_hopper(monkeypatch):
    """On a GPU older than sm_90 implementation='mosaic' says so instead of failing to compile."""
    from types import SimpleNamespace

    from entreg.kernels import _mosaic

    gpu = SimpleNamespace(compute_capability="8.0", device_kind="NVIDIA A100")
    monkeypatch.setattr(_mosaic.jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(_mosaic.jax, "devices", lambda: [gpu])
    with pytest.raises(ValueError, match="Hopper"):
        _mosaic.platform()
    gpu.compute_capability = "9.0"
    assert type(_mosaic.platform()) is _mosaic.Hopper
