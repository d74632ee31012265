"""Attention entropy collapse and its remedies (Zhai et al. 2023; Jha & Reagen 2025).

Task: in-context distribution estimation. Every sequence draws its own token law p from a
Dirichlet(ALPHA) over VOCAB tokens and then i.i.d. tokens from p; the model predicts each next
token. The Bayes predictor is the smoothed count of the tokens seen so far, i.e. attention spread
over the whole causal context: high entropy is part of the solution, and collapse (attending to
about one key) costs loss. Model: a causal pre-LN transformer (LAYERS x HEADS, width DIM) whose
attention records per-head entropy through `entreg.nnx.entropy_attention_fn`. Curves are
measured every EVAL_EVERY steps on one fixed evaluation batch (no minibatch noise).

Runs, same seed, initialization and data (runs that share an architecture train together,
vmapped, their learning rate, warmup and term weights traced: one compilation per architecture):
  baseline      Adam at a high learning rate HIGH_LR, no warmup
  sigma_reparam same, every linear map sigmaReparam'd (`entreg.losses.SigmaReparamLinear`)
  floor         same, plus the collapse guard `attention_entropy_term("floor", target=FLOOR)`
  standard      the full model at the moderate learning rate LR with warmup
  softmax_only  LayerNorm removed and the FFN made linear, at LR
  band          softmax_only plus the band penalty (default mode) whose per-(layer, head)
                targets theta are model Params, learned by the optimizer as in the paper

Claims checked:
  1. the high-LR baseline collapses in every layer: each layer's mean attention entropy ends
     (mean of the last 10% of evaluations) below COLLAPSE (10%) of its initial value, and its
     loss spikes: the eval loss rises to at least SPIKE times its running minimum;
  2. sigmaReparam and the entropy floor each keep every layer above COLLAPSE of its initial
     entropy at every evaluation and end at a loss lower than the baseline's by >= GAIN;
  3. without LayerNorm and the FFN nonlinearity the early layers (first half) are overloaded
     (a fraction >= OVERLOADED of their heads has normalized entropy above 0.9, and more than in
     the standard model) and the band penalty at least halves that fraction.
--quick trains 1 layer for 60 steps, baseline and floor only (vmapped together: one
compilation), and checks 1 without the spike and 2 for the floor: the collapse and the floor's
remedy show at that size.

    python -m experiments.attention_collapse [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import entreg
from entreg import losses
from experiments import _harness

VOCAB, LENGTH, ALPHA = 16, 32, 0.2
LAYERS, HEADS, DIM = 4, 4, 32  # --quick uses 1 layer (it smoke-tests, and compiles faster)
BATCH, EVAL_BATCH, EVAL_EVERY = 32, 256, 10
HIGH_LR, LR, WARMUP = 6e-2, 1e-3, 50
FLOOR, FLOOR_WEIGHT = 0.3, 1.0  # collapse guard: every row keeps 30% of its maximum entropy
BAND_WEIGHT = 10.0  # band penalty (default mode: smooth hinge, per-row causal maximum, mean)
COLLAPSE, SPIKE, OVERLOADED = 0.1, 1.05, 0.5
GAIN = 0.05  # nats/token: a remedy must lower the final loss by this much (a no-op gains 0)


@dataclasses.dataclass(frozen=True)
class Config:
    lr: float
    norm: bool = True
    gelu: bool = True
    sigma_reparam: bool = False
    floor: bool = False
    band: bool = False
    warmup: int = 0
    layers: int = LAYERS

    def architecture(self):
        return self.norm, self.gelu, self.sigma_reparam, self.layers


RUNS = {
    "baseline": Config(HIGH_LR),
    "floor": Config(HIGH_LR, floor=True),
    "standard": Config(LR, warmup=WARMUP),
    "sigma_reparam": Config(HIGH_LR, sigma_reparam=True),
    "softmax_only": Config(LR, norm=False, gelu=False, warmup=WARMUP),
    "band": Config(LR, norm=False, gelu=False, band=True, warmup=WARMUP),
}
QUICK_RUNS = ("baseline", "floor")  # one architecture: one compilation


def linear(cfg: Config, n_in: int, n_out: int, rngs: nnx.Rngs):
    if cfg.sigma_reparam:
        return losses.SigmaReparamLinear(n_in, n_out, rngs=rngs)
    return nnx.Linear(n_in, n_out, rngs=rngs)


class Attention(nnx.Module):
    def __init__(self, cfg: Config, rngs: nnx.Rngs):
        self.qkv = linear(cfg, DIM, 3 * DIM, rngs)
        self.out = linear(cfg, DIM, DIM, rngs)

    def __call__(self, x):
        q, k, v = jnp.split(self.qkv(x).reshape(*x.shape[:-1], 3 * HEADS, -1), 3, axis=-2)
        # Sows the per-head entropy [batch, heads, query] under "attention_entropy".
        y = entreg.nnx.entropy_attention_fn(q, k, v, is_causal=True, module=self)
        return self.out(y.reshape(x.shape))


class Block(nnx.Module):
    def __init__(self, cfg: Config, rngs: nnx.Rngs):
        norm = (lambda: nnx.LayerNorm(DIM, rngs=rngs)) if cfg.norm else (lambda: lambda x: x)
        self.norm1, self.norm2 = norm(), norm()
        self.attn = Attention(cfg, rngs)
        self.mlp1 = linear(cfg, DIM, 2 * DIM, rngs)
        self.mlp2 = linear(cfg, 2 * DIM, DIM, rngs)
        self.act = jax.nn.gelu if cfg.gelu else (lambda x: x)

    def __call__(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp2(self.act(self.mlp1(self.norm2(x))))


class Transformer(nnx.Module):
    def __init__(self, cfg: Config, rngs: nnx.Rngs):
        self.embed = nnx.Embed(VOCAB, DIM, rngs=rngs)
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (LENGTH, DIM)))
        self.blocks = nnx.List([Block(cfg, rngs) for _ in range(cfg.layers)])
        self.norm = nnx.LayerNorm(DIM, rngs=rngs) if cfg.norm else None
        self.head = nnx.Linear(DIM, VOCAB, rngs=rngs)
        # Learnable band targets theta[layer, head] (fractions of the maximum entropy).
        self.theta = nnx.Param(jnp.full((cfg.layers, HEADS), 0.5, jnp.float32))

    def __call__(self, tokens):
        x = self.embed(tokens) + self.pos[...]
        for block in self.blocks:
            x = block(x)
        return self.head(x if self.norm is None else self.norm(x))


def dirichlet_batch(rng: np.random.Generator, size):
    """Sequences [size, LENGTH + 1] of i.i.d. tokens from a per-sequence Dirichlet(ALPHA) law
    (numpy: data generation needs no compilation)."""
    cdf = np.cumsum(rng.dirichlet(np.full(VOCAB, ALPHA), size), axis=-1)
    u = rng.random((size, LENGTH + 1, 1))
    return jnp.asarray(np.minimum(np.sum(u > cdf[:, None, :], axis=-1), VOCAB - 1))


def forward(model, seq):
    """Cross-entropy and the per-layer attention entropies [batch, heads, query]."""
    logits, inter = nnx.capture(model, nnx.Intermediate)(seq[:, :-1])
    attn = entreg.nnx.collect(inter, entreg.nnx.ENTROPY)[entreg.nnx.ENTROPY]
    ce = entreg.cross_entropy(logits, target_probs=jax.nn.one_hot(seq[:, 1:], VOCAB))
    return ce.mean(), attn


def make_loss(floor_weight, band_weight):
    """Cross-entropy plus the floor and band terms, with (traced) weights: 0 turns a term off."""

    def task(model, seq):
        ce, attn = forward(model, seq)
        return ce, {"attention_entropy": attn, "theta": model.theta[...]}

    return entreg.compose(
        task,
        losses.attention_entropy_term(
            "floor", target=FLOOR, causal=True, weight=lambda step: FLOOR_WEIGHT * floor_weight
        ),
        # theta is a model Param: the optimizer learns the per-(layer, head) targets.
        losses.attention_entropy_term(
            "band", target="theta", causal=True, weight=lambda step: BAND_WEIGHT * band_weight
        ),
        base_name="task",
    )


def evaluate(model, seq):
    """Loss, per-layer mean entropy and per-layer overloaded-head fraction on a fixed batch."""
    model.eval(update_stats=False)  # sigmaReparam reuses its power-iteration vectors
    ce, attn = forward(model, seq)
    h_max = losses.max_attention_entropy(LENGTH, LENGTH, causal=True)[1:]
    # Query 0 sees a single key (maximum entropy 0), so it is left out of the normalization.
    per_head = jnp.stack([(h[..., 1:] / h_max).mean(axis=(0, 2)) for h in attn])
    overloaded = entreg.head_entropy_fractions(per_head)[1]
    return {
        "loss": ce,
        "entropy": jnp.stack([h.mean() for h in attn]),
        "overloaded": overloaded,
    }


def train(cfgs: dict[str, Config], seed: int, data, eval_seq) -> dict[str, dict]:
    """Trains configurations of one architecture together (vmapped) on ``data`` [chunks,
    EVAL_EVERY, BATCH, LENGTH + 1]; returns each one's curves measured on ``eval_seq`` every
    EVAL_EVERY steps, from step 0 to the end."""
    (arch,) = {c.architecture() for c in cfgs.values()}
    cfg = next(iter(cfgs.values()))
    model = nnx.jit(lambda r: Transformer(cfg, r))(nnx.Rngs(seed))  # one compiled init
    # Params are optimized; the rest (sigmaReparam's power-iteration vectors) is written by the
    # training forward pass and carried along.
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    hyper = {
        "lr": jnp.asarray([c.lr for c in cfgs.values()]),
        "warmup": jnp.asarray([c.warmup for c in cfgs.values()], jnp.float32),
        "floor": jnp.asarray([float(c.floor) for c in cfgs.values()]),
        "band": jnp.asarray([float(c.band) for c in cfgs.values()]),
    }

    def optimizer(h):
        """Adam with a linear warmup to the peak rate (none when warmup = 0); the state has the
        same structure whatever h is."""

        def schedule(count):
            warm = jnp.minimum(count / jnp.maximum(h["warmup"], 1.0), 1.0)
            return h["lr"] * jnp.where(h["warmup"] > 0, warm, 1.0)

        return optax.adam(schedule)

    def train_step(carry, inputs, h):
        params, rest, opt_state, term_state = carry
        seq, t = inputs
        loss_fn = make_loss(h["floor"], h["band"])
        model = nnx.merge(graphdef, params, rest)
        model.train(update_stats=True)
        # nnx.value_and_grad differentiates the Params and carries the non-Param updates
        # (sigmaReparam's power iteration, written in the forward) back into the model.
        grad_fn = nnx.value_and_grad(
            lambda m: loss_fn(m, seq, state=term_state, step=t), has_aux=True
        )
        (_, (term_state, _)), grads = grad_fn(model)
        rest = nnx.state(model, nnx.Not(nnx.Param))
        updates, opt_state = optimizer(h).update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), rest, opt_state, term_state), None

    @jax.jit
    @functools.partial(jax.vmap, in_axes=(0, None, None, 0))  # over the configurations
    def chunk(carry, seqs, t0, h):
        """Evaluates the state, then trains EVAL_EVERY steps (one compiled graph for both)."""
        params, rest = carry[:2]
        metrics = evaluate(nnx.merge(graphdef, params, rest), eval_seq)
        inputs = (seqs, t0 + jnp.arange(EVAL_EVERY))
        carry, _ = jax.lax.scan(functools.partial(train_step, h=h), carry, inputs)
        return carry, metrics

    @jax.jit
    def init(params, rest, hyper):  # one copy per configuration
        stack = functools.partial(jax.tree.map, lambda x: jnp.stack([x] * len(cfgs)))
        opt_state = jax.vmap(lambda h: optimizer(h).init(params))(hyper)
        return stack(params), stack(rest), opt_state, stack(make_loss(0.0, 0.0).init())

    carry = init(params, rest, hyper)
    history = []
    # The last chunk only serves its evaluation of the final state: its updates are dropped.
    for c in _harness.progress(range(len(data)), " + ".join(cfgs)):
        carry, metrics = chunk(carry, data[c], c * EVAL_EVERY, hyper)
        history.append(metrics)
    history = jax.device_get(history)
    out = {}
    for i, name in enumerate(cfgs):
        out[name] = {k: np.stack([h[k][i] for h in history]) for k in history[0]}
        out[name]["step"] = np.arange(len(history)) * EVAL_EVERY
    return out


def spike_ratio(loss: np.ndarray) -> float:
    """max_t L_t / min_{s <= t} L_s on the eval loss: > 1 when the loss rises after a minimum."""
    return float(np.max(loss / np.minimum.accumulate(loss)))


def plot(runs, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(runs)
    fig, axes = plt.subplots(2, len(names), figsize=(3.3 * len(names), 6.4), sharex=True)
    for j, name in enumerate(names):
        r = runs[name]
        for layer in range(r["entropy"].shape[1]):
            axes[0, j].plot(r["step"], r["entropy"][:, layer], label=f"layer {layer}")
        axes[0, j].axhline(
            COLLAPSE * r["entropy"][0].min(), color="k", ls=":", lw=1, label="10% of initial"
        )
        axes[0, j].set_title(f"{name}\nattention entropy (nats)", fontsize=9)
        early = max(r["overloaded"].shape[1] // 2, 1)
        axes[1, j].plot(r["step"], r["overloaded"][:, :early].mean(1), label="early layers")
        if r["overloaded"].shape[1] > early:
            axes[1, j].plot(r["step"], r["overloaded"][:, early:].mean(1), label="late layers")
        axes[1, j].set_ylim(-0.05, 1.05)
        axes[1, j].set_title("overloaded-head fraction", fontsize=9)
        axes[1, j].set_xlabel("step")
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

    loss_path = path.with_name("attention_collapse_loss.png")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for name in names:
        ax = axes[0] if runs[name]["lr"] == HIGH_LR else axes[1]
        ax.plot(runs[name]["step"], runs[name]["loss"], label=name)
    axes[0].set_title(f"eval loss at lr {HIGH_LR:g}, no warmup")
    axes[1].set_title(f"eval loss at lr {LR:g}, {WARMUP} warmup steps")
    for ax in axes:
        ax.set_xlabel("step")
        ax.set_ylabel("nats/token")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(loss_path, dpi=110)
    plt.close(fig)
    return [path, loss_path]


def main() -> int:
    args = _harness.parse_args("attention_collapse", __doc__.splitlines()[0])
    steps, layers, names = (60, 1, QUICK_RUNS) if args.quick else (600, LAYERS, tuple(RUNS))
    # One data stream (fresh sequences every step) and one eval batch shared by every run.
    n = (steps + EVAL_EVERY) * BATCH  # + the chunk that evaluates the final state
    seqs = dirichlet_batch(np.random.default_rng(args.seed), n + EVAL_BATCH)
    data = seqs[:n].reshape(-1, EVAL_EVERY, BATCH, LENGTH + 1)
    eval_seq = seqs[n:]
    groups: dict[tuple, dict[str, Config]] = {}
    for name in names:
        cfg = dataclasses.replace(RUNS[name], layers=layers)
        groups.setdefault(cfg.architecture(), {})[name] = cfg
    runs = {}
    for cfgs in groups.values():
        runs |= train(cfgs, args.seed, data, eval_seq)
    for name in runs:
        runs[name]["lr"] = RUNS[name].lr
    tail = max(len(runs["baseline"]["loss"]) // 10, 1)

    def final(name, key):
        return runs[name][key][-tail:].mean(axis=0)

    def ratio(name):  # [evaluations, layers]: each layer's entropy over its initial value
        return runs[name]["entropy"] / runs[name]["entropy"][0]

    base_final = ratio("baseline")[-tail:].mean(axis=0)  # per layer
    claims = [
        _harness.at_most(
            "baseline: max over layers of final entropy / initial",
            base_final.max(),
            COLLAPSE,
            "per layer " + ", ".join(f"{r:.4f}" for r in base_final) + f"; lr {HIGH_LR:g}",
            quick=True,
        ),
        _harness.at_least(
            "baseline: loss spike (max L / running min)",
            spike_ratio(runs["baseline"]["loss"]),
            SPIKE,
            f"final loss {final('baseline', 'loss'):.3f}",
        ),
    ]
    for name in [n for n in ("sigma_reparam", "floor") if n in runs]:
        claims.append(
            _harness.at_least(
                f"{name}: min over layers and time of entropy / initial",
                ratio(name).min(),
                COLLAPSE,
                quick=True,
            )
        )
        claims.append(
            _harness.at_most(
                f"{name}: final loss - baseline's",
                final(name, "loss") - final("baseline", "loss"),
                -GAIN,
                f"{final(name, 'loss'):.3f} vs {final('baseline', 'loss'):.3f}",
                quick=True,
            )
        )
    half = max(layers // 2, 1)  # the early layers
    early = {n: float(final(n, "overloaded")[:half].mean()) for n in runs}
    if not args.quick:
        claims += [
            _harness.at_least(
                "softmax_only: early-layer overloaded fraction",
                early["softmax_only"],
                OVERLOADED,
                f"standard model {early['standard']:.2f}",
            ),
            _harness.at_least(
                "softmax_only - standard overloaded fraction",
                early["softmax_only"] - early["standard"],
                0.0 + 1e-9,
            ),
            _harness.at_most(
                "band: early-layer overloaded fraction",
                early["band"],
                0.5 * early["softmax_only"],
                f"softmax_only {early['softmax_only']:.2f} (threshold: half of it)",
            ),
        ]
    plots = plot(runs, args.out / "attention_collapse.png")
    measured = {
        "steps": steps,
        "high_lr": HIGH_LR,
        "lr": LR,
        "final_loss": {n: float(final(n, "loss")) for n in runs},
        "final_entropy": {n: final(n, "entropy").tolist() for n in runs},
        "initial_entropy": {n: runs[n]["entropy"][0].tolist() for n in runs},
        "min_entropy_ratio": {n: ratio(n).min(axis=0).tolist() for n in runs},
        "early_overloaded_fraction": early,
        "loss_spike_ratio": {n: spike_ratio(runs[n]["loss"]) for n in runs},
    }
    return _harness.report(args, claims, measured, plots)


if __name__ == "__main__":
    raise SystemExit(main())
