"""Token log-prob and entropy straight from hidden states, without the [T, V] logits."""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from entreg import _checks
from entreg._typing import Array, ArrayLike, Float, Integer
from entreg.temperature import token_log_probs

from . import _mosaic, _token_entropy_mosaic, _token_entropy_triton, _token_entropy_xla, _triton

IMPLEMENTATIONS = ("xla", "mosaic", "triton", "reference")


def reference_log_probs_and_entropy(
    hidden: Float[ArrayLike, "*batch h"],
    weight: Float[Array | np.ndarray, "h v"],
    labels: Integer[ArrayLike, "*batch"],
    *,
    temperature: float | Float[ArrayLike, ""] = 1.0,
    valid_vocab: int | None = None,
    vocab_axis: str | None = None,
) -> tuple[Float[Array, "*batch"], Float[Array, "*batch"]]:
    """Unfused reference: materializes the logits (in at least float32) and reduces them; with
    ``vocab_axis`` it first assembles the whole weight on every device."""
    for name, x in (("hidden", hidden), ("weight", weight)):
        if not jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating):
            raise TypeError(f"`{name}` must be floating point, got dtype {jnp.asarray(x).dtype}.")
    if vocab_axis is not None:
        # A psum of zero-padded slices is an all-gather whose result is typed as replicated.
        n, v_local = jax.lax.axis_size(vocab_axis), weight.shape[1]
        full = jnp.zeros((weight.shape[0], n * v_local), weight.dtype)
        start = jax.lax.axis_index(vocab_axis) * v_local
        weight = jax.lax.psum(
            jax.lax.dynamic_update_slice_in_dim(full, weight, start, 1), vocab_axis
        )
    v = weight.shape[-1]
    acc = _token_entropy_xla.accumulation_dtype(hidden, weight)
    logits = jnp.dot(hidden, weight, preferred_element_type=acc)
    where = None
    if valid_vocab is not None:
        where = jnp.broadcast_to(jnp.arange(v) < valid_vocab, logits.shape)
    return token_log_probs(logits, labels, temperature=temperature, where=where)


def linear_log_probs_and_entropy(
    hidden: Float[ArrayLike, "*batch h"],
    weight: Float[ArrayLike, "h v"],
    labels: Integer[ArrayLike, "*batch"],
    *,
    temperature: float | Float[ArrayLike, ""] = 1.0,
    valid_vocab: int | None = None,
    chunk_size: int = 2048,
    vocab_axis: str | None = None,
    implementation: str | None = None,
) -> tuple[Float[Array, "*batch"], Float[Array, "*batch"]]:
    r"""log pi(y) and H(pi) per token for pi = softmax(hidden @ weight / temperature), fused.

        z = h W / tau,   log pi(y) = z_y - logsumexp(z),   H = logsumexp(z) - E_pi[z]

    The [..., V] logits are never materialized: the vocabulary is swept in chunks of
    ``chunk_size`` columns with an online, centred float32 accumulator (start at -inf, padded
    and invalid columns at -inf), and a custom VJP recomputes the chunks and takes cotangents
    for both outputs. Memory beyond inputs and outputs is a few [T, chunk_size] blocks, never
    [T, V]: on XLA:CPU two (the chunk's logits and the exponentials its reductions read; one
    more for the value alone when a chunk has columns to mask, so prefer a ``chunk_size`` that
    divides each device's V columns when ``valid_vocab`` counts them all). [T, V]
    is the memory wall of RL entropy terms: [32k tokens, 150k vocabulary] logits are 20 GB in
    float32.

    Args:
      hidden: [..., H] final hidden states (any float dtype; products accumulate in float32).
      weight: [H, V] unembedding (LM head) matrix.
      labels: [...] integer token ids; an id outside [0, valid_vocab) gets log-prob -inf.
      temperature: tau > 0, a Python number or a traced scalar.
      valid_vocab: the first ``valid_vocab`` columns are the real vocabulary; the rest (padding
        to a multiple of 128, as LM heads often are) are excluded. Default: all V.
      chunk_size: vocabulary columns per block (static).
      vocab_axis: for a vocabulary sharded over a mesh axis (tensor parallelism), call this
        inside ``jax.shard_map`` with ``weight`` the local [H, V / n] slice (device i holds
        columns [i V / n, (i + 1) V / n)) and ``hidden``, ``labels`` replicated over that axis;
        ``valid_vocab`` counts the whole vocabulary. Each device sweeps its own columns; the
        partial states merge by a pmax of the max and a psum of the rescaled sums (O(T)
        communication), and the backward psums dh. Outputs are replicated over the axis.
      implementation: ``"xla"`` (chunked, every backend), ``"mosaic"`` (Pallas Mosaic GPU
        kernels for Hopper: 64 x 64 tiles, wgmma, a backward that scatter-adds dh and dW with
        TMA reductions; bfloat16 / float16 ``hidden`` and ``weight``; emulated off-GPU),
        ``"triton"`` (portable Pallas kernels: Triton lowering on GPU, interpret mode
        elsewhere), ``"reference"`` (materialized logits, for tests), or None: ``"xla"``, which
        every backend runs. The Pallas kernels are verified off-GPU (emulation or interpret
        mode, and lowering for CUDA), not yet run on a GPU, so they are not the GPU default.
        Neither takes ``vocab_axis``; ``chunk_size`` applies to "xla" and "triton".

    Returns:
      ``(log_probs, entropy)``, each [...], float32 (float64 under x64 with float64 inputs).

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from entreg import kernels
      >>> rng = np.random.default_rng(0)
      >>> hidden = rng.standard_normal((3, 8), np.float32)  # [T, H]
      >>> lm_head = rng.standard_normal((8, 100), np.float32)  # [H, V]
      >>> labels = jnp.array([1, 2, 3])
      >>> fused = kernels.linear_log_probs_and_entropy(hidden, lm_head, labels, chunk_size=32)
      >>> log_prob, ent = fused
      >>> ref = kernels.reference_log_probs_and_entropy(hidden, lm_head, labels)
      >>> bool(jnp.allclose(ent, ref[1], atol=1e-4)), log_prob.shape
      (True, (3,))
    """
    # No upcast here: a bf16 weight stays bf16 in memory; products accumulate in float32.
    h, w = jnp.asarray(hidden), jnp.asarray(weight)
    for name, x in (("hidden", h), ("weight", w)):
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"`{name}` must be floating point, got dtype {x.dtype}.")
    if w.ndim != 2 or h.ndim < 1 or h.shape[-1] != w.shape[0]:
        raise ValueError(
            f"`hidden` [..., H] and `weight` [H, V] must agree on H, got {h.shape} and {w.shape}."
        )
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"`labels` must be integer token ids, got dtype {labels.dtype}.")
    if labels.shape != h.shape[:-1]:
        raise ValueError(f"`labels` must have shape {h.shape[:-1]}, got {labels.shape}.")
    v = w.shape[1]
    if vocab_axis is not None:
        v *= _checks.axis_size(vocab_axis, "vocab_axis")
    if valid_vocab is None:
        valid_vocab = v
    if not isinstance(valid_vocab, numbers.Integral) or not 1 <= valid_vocab <= v:
        raise ValueError(f"`valid_vocab` must be an int in [1, {v}], got {valid_vocab!r}.")
    chunk_size = _checks.positive_int(chunk_size, "chunk_size")
    _checks.temperature(temperature)
    impl = _checks.choice(
        "xla" if implementation is None else implementation, "implementation", IMPLEMENTATIONS
    )
    if impl in ("mosaic", "triton") and vocab_axis is not None:
        raise ValueError(f"implementation={impl!r} takes no `vocab_axis`: use 'xla' for it.")
    if impl == "mosaic":
        _mosaic.check_operands("hidden", h)
        if w.dtype != h.dtype:
            raise TypeError(
                f"implementation='mosaic' needs `weight` in the dtype of `hidden` ({h.dtype}), "
                f"got {w.dtype}."
            )
    if impl == "reference":
        return reference_log_probs_and_entropy(
            hidden,
            weight,
            labels,
            temperature=temperature,
            valid_vocab=valid_vocab,
            vocab_axis=vocab_axis,
        )
    tau = jnp.asarray(temperature, _token_entropy_xla.accumulation_dtype(h, w))
    if tau.shape != ():
        raise ValueError(f"`temperature` must be a scalar, got shape {tau.shape}.")
    batch = labels.shape
    h, labels = h.reshape(-1, h.shape[-1]), labels.reshape(-1)
    if impl == "xla":
        chunk = min(chunk_size, w.shape[1])
        logp, ent = _token_entropy_xla.log_probs_and_entropy(
            h, w, labels, tau, int(valid_vocab), int(chunk), vocab_axis
        )
    elif impl == "mosaic":
        logp, ent = _mosaic_padded(h, w, labels, tau, int(valid_vocab))
    else:
        logp, ent = _triton_padded(h, w, labels, tau, int(valid_vocab), chunk_size)
    return logp.reshape(batch), ent.reshape(batch)


def _mosaic_padded(h, w, labels, tau, valid_vocab: int):
    """Pads T, H and V to whole 64-tiles (zero rows and columns; label -1 on padded tokens,
    -inf logits past valid_vocab). W is copied only when V or H is not a multiple of 64."""
    (t, hd), v = h.shape, w.shape[1]
    tp, hp, vp = (_mosaic.round_up(n) for n in (t, hd, v))
    h = jnp.pad(h, ((0, tp - t), (0, hp - hd)))
    if (hp, vp) != w.shape:
        w = jnp.pad(w, ((0, hp - hd), (0, vp - v)))
    labels = jnp.pad(labels.astype(jnp.int32), (0, tp - t), constant_values=-1)
    logp, ent = _token_entropy_mosaic.log_probs_and_entropy(
        h, w, labels, tau.astype(jnp.float32), valid_vocab
    )
    return logp[:t], ent[:t]


def _triton_padded(h, w, labels, tau, valid_vocab: int, chunk_size: int):
    """Pads to Triton-friendly tiles: tokens to blocks of bt (label -1: no column), H to a power
    of two (zero rows change no logit), V to whole chunks (-inf past valid_vocab)."""
    (t, hd), v = h.shape, w.shape[1]
    chunk, bt, hp = _triton.pow2(min(chunk_size, v)), min(128, _triton.pow2(t)), _triton.pow2(hd)
    tp, vp = -(-t // bt) * bt, -(-v // chunk) * chunk
    h = jnp.pad(h, ((0, tp - t), (0, hp - hd)))
    w = jnp.pad(w, ((0, hp - hd), (0, vp - v)))
    labels = jnp.pad(labels, (0, tp - t), constant_values=-1)
    logp, ent = _token_entropy_triton.log_probs_and_entropy(
        h, w, labels, tau, valid_vocab, chunk, bt
    )
    return logp[:t], ent[:t]
