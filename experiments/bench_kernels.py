"""Benchmark: fused entropy kernels against their naive versions, same inputs, one process.

Token log-prob + entropy from hidden states (h [4096, 512], W [512, 32768], float32), forward
and backward w.r.t. h and W: `entreg.kernels.linear_log_probs_and_entropy` (vocabulary chunks
of 2048, never the [T, V] logits) against the naive jnp version (logits, log_softmax, entropy).
Attention with entropy (B=1, N=8 heads, T=4096, D=64, float32), forward and backward:
`entreg.kernels.attention_with_entropy` (blocks of 512) against the materialized-softmax
reference computing the same outputs (memory) and `jax.nn.dot_product_attention` without
entropy (time).

Peers, when installed (``pip install -e ".[experiments,bench]"``), on the same token inputs in
the same process, each with its own defaults and weight layout: jax-cce's `linear_cross_entropy`
(cut cross-entropy: vocabulary chunks of 4096 in a lax.scan, W as [V, H]) and tokamax's
`linear_softmax_cross_entropy_loss` (implementation "xla": materialized logits). They return the
cross-entropy only; entreg returns the log-probs and the entropy. jax-cce is also run at entreg's
chunk size, so that the memory ratio can be read at equal chunks.

Claims (CPU, "xla" implementations): token temp memory <= 1/8 of naive and time <= 1.0x naive;
with the peers installed, token temp memory <= 0.5x jax-cce's and <= tokamax's, and time <= 1.0x
jax-cce's;
attention temp memory <= 1/16 of the materialized reference and time <= 1.5x
jax.nn.dot_product_attention. Temporary memory is XLA's compiled temp_size_in_bytes (the
executable that is timed); times are medians of 5 rounds after a warm-up, each round calling
every variant once in turn, so that a drift of the machine's speed weighs on all alike. The
memory ratios are deterministic and checked at --quick size too (T=256, V=2048 tokens;
attention T=512, blocks of 64); the times are not.

Hopper section (bfloat16, implementation="mosaic"), run on a GPU only (on CPU the kernel tests
run the Mosaic kernels through their emulation). It adds two claims: the entropy output adds
<= 10% to the attention kernel's fwd+bwd time (entropy cotangent vs none: the same kernel,
with and without the entropy term of the backward and the loss), and the token kernel's fwd+bwd
(8 T H V FLOPs: logits, recomputed logits, dh, dW) reaches >= 60% of the throughput of a plain
bf16 matmul with the same FLOPs, timed in the same process.

    python -m experiments.bench_kernels [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np

from entreg import kernels
from experiments import _harness

TOKEN = {"t": 4096, "h": 512, "v": 32768, "chunk": 2048}
ATTN = {"b": 1, "t": 4096, "n": 8, "d": 64, "block": 512}
QUICK_TOKEN = {"t": 256, "h": 64, "v": 2048, "chunk": 256}
QUICK_ATTN = {"b": 1, "t": 512, "n": 2, "d": 16, "block": 64}
MIB = 2**20


def token_losses(labels, chunk):
    def naive(h, w):
        log_p = jax.nn.log_softmax(h @ w)
        ent = -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)
        return jnp.sum(jnp.take_along_axis(log_p, labels[:, None], -1)) + jnp.sum(ent)

    def fused(h, w):
        lp, ent = kernels.linear_log_probs_and_entropy(h, w, labels, chunk_size=chunk)
        return jnp.sum(lp) + jnp.sum(ent)

    return naive, fused


def attention_losses(block):
    def blockwise(q, k, v):
        out, ent = kernels.attention_with_entropy(q, k, v, block_q=block, block_k=block)
        return jnp.sum(out) + jnp.sum(ent)

    def blockwise_output_only(q, k, v):
        return jnp.sum(kernels.attention_with_entropy(q, k, v, block_q=block, block_k=block)[0])

    def materialized(q, k, v):
        out, ent = kernels.reference_attention_with_entropy(q, k, v)
        return jnp.sum(out) + jnp.sum(ent)

    def jax_attention(q, k, v):
        return jnp.sum(jax.nn.dot_product_attention(q, k, v))

    return blockwise, blockwise_output_only, materialized, jax_attention


def peer_losses(h, w, labels, chunk):
    """Cross-entropy from hidden states by the peers that are installed (the ``bench`` extra):
    name -> (loss, its arguments in the peer's own weight layout)."""
    found = {}
    try:
        import jax_cce
    except ImportError:
        pass
    else:
        w_vh = jnp.asarray(w.T)  # jax-cce takes W as [V, H]; transposed once, outside the loss
        found["jax_cce"] = (lambda a, b: jax_cce.linear_cross_entropy(a, b, labels), (h, w_vh))
        found["jax_cce_entreg_chunk"] = (
            lambda a, b: jax_cce.linear_cross_entropy(a, b, labels, chunk_size=chunk),
            (h, w_vh),
        )
    try:
        import tokamax
        from absl import flags
    except ImportError:
        pass
    else:
        # tokamax reads its settings from absl flags, which it would parse from our command line.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS(sys.argv[:1])
        found["tokamax_xla"] = (
            lambda a, b: tokamax.linear_softmax_cross_entropy_loss(
                a, labels, b, reduction="mean", implementation="xla"
            ),
            (h, w),
        )
    return found


def measure(fns, argnums, repeats, timed):
    """Per function (name -> (fn, args)): compiled temp bytes of its gradient, and, for the
    names in ``timed``, its median time over interleaved rounds (`_harness.median_times`; the
    same compiled executable serves both). Returns the rows and the executables."""
    rows, compiled = {}, {}
    for name, (fn, args) in _harness.progress(fns.items(), "compiling"):
        grad = compiled[name] = jax.jit(jax.grad(fn, argnums)).lower(*args).compile()
        rows[name] = {"temp_bytes": int(grad.memory_analysis().temp_size_in_bytes)}
    calls = {n: functools.partial(compiled[n], *args) for n, (_, args) in fns.items() if n in timed}
    for name, seconds in _harness.median_times(calls, repeats).items():
        rows[name]["seconds"] = seconds
    return rows, compiled


def hopper(tok, att, key, repeats):
    """Times of the Mosaic kernels (bf16, fwd+bwd) and their reference points."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    bf = jnp.bfloat16
    h = jax.random.normal(k1, (tok["t"], tok["h"]), bf)
    w = (jax.random.normal(k2, (tok["h"], tok["v"]), jnp.float32) / np.sqrt(tok["h"])).astype(bf)
    labels = jax.random.randint(k3, (tok["t"],), 0, tok["v"])

    def token(a, b):
        lp, ent = kernels.linear_log_probs_and_entropy(a, b, labels, implementation="mosaic")
        return jnp.sum(lp) + jnp.sum(ent)

    # Four [T, H] x [H, V]-sized bf16 matmuls: the token kernel's FLOPs, at library speed.
    x = jax.random.normal(k4, (4, tok["t"], tok["h"]), bf)

    def matmuls(a, b):
        return jnp.sum(jnp.einsum("ith,hv->itv", a, b, preferred_element_type=jnp.float32))

    shape = (att["b"], att["t"], att["n"], att["d"])
    q, k, v = (jax.random.normal(kk, shape, bf) for kk in jax.random.split(k4, 3))

    def attention(with_entropy):
        def f(a, b, c):
            out, ent = kernels.attention_with_entropy(a, b, c, implementation="mosaic")
            loss = jnp.sum(out.astype(jnp.float32))
            return loss + jnp.sum(ent) if with_entropy else loss

        return f

    def grad(fn, args, argnums):
        return functools.partial(jax.jit(jax.grad(fn, argnums)), *args)

    runs = {
        "token_mosaic": grad(token, (h, w), (0, 1)),
        "bf16_matmuls_same_flops": functools.partial(jax.jit(matmuls), x, w),
        "attention_mosaic_with_entropy": grad(attention(True), (q, k, v), (0, 1, 2)),
        "attention_mosaic_output_only": grad(attention(False), (q, k, v), (0, 1, 2)),
    }
    seconds = _harness.median_times(runs, repeats)
    flops = 8 * tok["t"] * tok["h"] * tok["v"]
    return {
        "seconds": seconds,
        "token_flops": flops,
        "token_matmul_throughput_fraction": seconds["bf16_matmuls_same_flops"]
        / seconds["token_mosaic"],
        "entropy_output_cost": seconds["attention_mosaic_with_entropy"]
        / seconds["attention_mosaic_output_only"]
        - 1,
    }


def plot(token, attn, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (title, rows) in zip(
        axes, (("token entropy", token), ("attention", attn)), strict=True
    ):
        names = list(rows)
        ax.bar(names, [rows[n]["temp_bytes"] / MIB for n in names], color="tab:blue")
        ax.set_yscale("log")
        ax.set_ylabel("compiled temp memory, fwd+bwd (MiB)")
        ax.set_title(title)
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    args = _harness.parse_args("bench_kernels", __doc__.splitlines()[0])
    tok, att = (QUICK_TOKEN, QUICK_ATTN) if args.quick else (TOKEN, ATTN)
    repeats = 1 if args.quick else 5
    key = jax.random.key(args.seed)
    k1, k2, k3, k4 = jax.random.split(key, 4)

    h = jax.random.normal(k1, (tok["t"], tok["h"]), jnp.float32)
    w = jax.random.normal(k2, (tok["h"], tok["v"]), jnp.float32) / np.sqrt(tok["h"])
    labels = jax.random.randint(k3, (tok["t"],), 0, tok["v"])
    naive, fused = token_losses(labels, tok["chunk"])
    peers = peer_losses(h, w, labels, tok["chunk"])
    token, grads = measure(
        {"naive": (naive, (h, w)), "fused": (fused, (h, w)), **peers},
        (0, 1),
        repeats,
        {"naive", "fused", *peers},
    )
    g_naive, g_fused = grads["naive"](h, w), grads["fused"](h, w)
    token_err = max(
        float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))
        for a, b in zip(g_naive, g_fused, strict=True)
    )

    shape = (att["b"], att["t"], att["n"], att["d"])
    q, k, v = (jax.random.normal(kk, shape, jnp.float32) for kk in jax.random.split(k4, 3))
    blockwise, out_only, materialized, jax_attention = attention_losses(att["block"])
    attn, _ = measure(
        {
            "blockwise": (blockwise, (q, k, v)),
            "blockwise_output_only": (out_only, (q, k, v)),
            "materialized": (materialized, (q, k, v)),
            "jax_dot_product_attention": (jax_attention, (q, k, v)),
        },
        (0, 1, 2),
        repeats,
        {"blockwise", "blockwise_output_only", "jax_dot_product_attention"},
    )

    t_ratio = token["fused"]["seconds"] / token["naive"]["seconds"]
    t_mem = token["fused"]["temp_bytes"] / token["naive"]["temp_bytes"]
    a_ratio = attn["blockwise"]["seconds"] / attn["jax_dot_product_attention"]["seconds"]
    a_mem = attn["blockwise"]["temp_bytes"] / attn["materialized"]["temp_bytes"]
    entropy_cost = attn["blockwise"]["seconds"] / attn["blockwise_output_only"]["seconds"] - 1
    tag = f"T={tok['t']}, H={tok['h']}, V={tok['v']}"
    claims = [
        _harness.at_most(
            f"token ({tag}) fused / naive temp memory",
            t_mem,
            1 / 8,
            f"{token['fused']['temp_bytes'] / MIB:.1f} vs {token['naive']['temp_bytes'] / MIB:.1f}"
            f" MiB (chunk {tok['chunk']}); grads agree to {token_err:.1e} relative",
            quick=True,
        ),
        _harness.at_most(
            "token fused / naive time (fwd+bwd)",
            t_ratio,
            1.0,
            f"{token['fused']['seconds']:.2f} s vs {token['naive']['seconds']:.2f} s",
        ),
        _harness.at_most(
            f"attention (T={att['t']}, N={att['n']}, D={att['d']}) blockwise / materialized temp",
            a_mem,
            1 / 16,
            f"{attn['blockwise']['temp_bytes'] / MIB:.1f} vs "
            f"{attn['materialized']['temp_bytes'] / MIB:.1f} MiB (jax.nn.dot_product_attention "
            f"{attn['jax_dot_product_attention']['temp_bytes'] / MIB:.1f} MiB)",
            quick=True,
        ),
        _harness.at_most(
            "attention+entropy / jax.nn.dot_product_attention time",
            a_ratio,
            1.5,
            f"{attn['blockwise']['seconds']:.2f} s vs "
            f"{attn['jax_dot_product_attention']['seconds']:.2f} s; the entropy output adds "
            f"{entropy_cost:+.1%} to the same kernel",
        ),
    ]
    fused_mib, fused_s = token["fused"]["temp_bytes"] / MIB, token["fused"]["seconds"]
    if peers:
        # The peers time the same quantity only if they compute it: their mean cross-entropy
        # against entreg's log-probs (a wrong layout or label order would pass the timing).
        lp, _ = kernels.linear_log_probs_and_entropy(h, w, labels, chunk_size=tok["chunk"])
        ce = -float(jnp.mean(lp))
        peer_err = max(abs(float(fn(*a)) - ce) / ce for fn, a in peers.values())
        claims.append(
            _harness.at_most(
                "peers' mean cross-entropy vs entreg's log-probs (max relative difference)",
                peer_err,
                1e-5,
                f"{sorted(peers)}; entreg {ce:.6f} nats",
                quick=True,
            )
        )
    if "jax_cce" in token:
        cce, same = token["jax_cce"], token["jax_cce_entreg_chunk"]
        claims += [
            _harness.at_most(
                "token fused / jax-cce temp memory (fwd+bwd)",
                token["fused"]["temp_bytes"] / cce["temp_bytes"],
                0.5,
                f"{fused_mib:.1f} vs {cce['temp_bytes'] / MIB:.1f} MiB at jax-cce's default chunk"
                f" (at entreg's chunk {tok['chunk']}: {same['temp_bytes'] / MIB:.1f} MiB)",
            ),
            _harness.at_most(
                "token fused (log-probs + entropy) / jax-cce time (fwd+bwd)",
                fused_s / cce["seconds"],
                1.0,
                f"{fused_s:.2f} s vs {cce['seconds']:.2f} s (at entreg's chunk: "
                f"{same['seconds']:.2f} s)",
            ),
        ]
    if "tokamax_xla" in token:
        tkx = token["tokamax_xla"]
        claims.append(
            _harness.at_most(
                "token fused / tokamax xla temp memory (fwd+bwd)",
                token["fused"]["temp_bytes"] / tkx["temp_bytes"],
                1.0,
                f"{fused_mib:.1f} vs {tkx['temp_bytes'] / MIB:.1f} MiB; time {fused_s:.2f} s vs "
                f"{tkx['seconds']:.2f} s ({fused_s / tkx['seconds']:.2f}x)",
            )
        )
    missing = [
        peer
        for peer, row in (("jax-cce", "jax_cce"), ("tokamax", "tokamax_xla"))
        if row not in token
    ]
    if missing:
        print(f"peers not installed, not compared: {missing} (pip install -e '.[bench]')")
    on_gpu = jax.default_backend() == "gpu"
    gpu = "not measured: no GPU in this run"
    if on_gpu:
        gpu = hopper(tok, att, jax.random.fold_in(key, 1), repeats)
        device = jax.devices()[0].device_kind
        claims += [
            _harness.at_most(
                f"{device}: entropy output cost, mosaic attention fwd+bwd",
                gpu["entropy_output_cost"],
                0.10,
                f"{gpu['seconds']['attention_mosaic_with_entropy'] * 1e3:.2f} ms vs "
                f"{gpu['seconds']['attention_mosaic_output_only'] * 1e3:.2f} ms",
            ),
            _harness.at_least(
                f"{device}: token mosaic fwd+bwd / bf16 matmul throughput",
                gpu["token_matmul_throughput_fraction"],
                0.60,
                f"{gpu['seconds']['token_mosaic'] * 1e3:.2f} ms for {gpu['token_flops']:.2e} "
                f"FLOPs vs {gpu['seconds']['bf16_matmuls_same_flops'] * 1e3:.2f} ms",
            ),
        ]
    measured = {
        "backend": jax.default_backend(),
        "token": {**token, "shape": tok, "grad_max_rel_err": token_err, "peers_missing": missing},
        "attention": {**attn, "shape": att, "entropy_output_cost": entropy_cost},
        "gpu": gpu,
    }
    path = args.out / "bench_kernels.png"
    plot(token, attn, path)
    return _harness.report(args, claims, measured, [path])


if __name__ == "__main__":
    raise SystemExit(main())
