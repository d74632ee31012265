"""Attention entropy collapse and its remedies (Zhai et al. 2023; Jha & Reagen 2025).

Task: in-context distribution estimation. Every sequence draws its own token law p from a
Dirichlet(ALPHA) over VOCAB tokens and then i.i.d. tokens from p; the model predicts each next
token. The Bayes predictor is the smoothed count of the tokens seen so far, i.e. attention spread
over the whole causal context: high entropy is part of the solution, and collapse (attending to
about one key) costs loss. Model: a causal pre-LN transformer (LAYERS x HEADS, width DIM) whose
attention records per-head entropy through `entreg.nnx.entropy_attention_fn`. Curves are
measured every EVAL_EVERY steps on one fixed evaluation batch (no minibatch noise).

Runs, same seed and data:
  baseline      Adam at a high learning rate HIGH_LR, no warmup
  sigma_reparam same, every linear map sigmaReparam'd (`entreg.losses.SigmaReparamLinear`)
  floor         same, plus the collapse guard `attention_entropy_term("floor", target=FLOOR)`
  standard      the full model at the moderate learning rate LR with warmup
  softmax_only  LayerNorm removed and the FFN made linear, at LR
  band          softmax_only plus the band penalty (default mode) whose per-(layer, head)
                targets theta are model Params, learned by the optimizer as in the paper

Claims checked:
  1. the high-LR baseline collapses: some layer's mean attention entropy falls below COLLAPSE
     (10%) of its initial value, and its loss spikes: the eval loss rises to at least SPIKE
     times its running minimum;
  2. sigmaReparam and the entropy floor each keep every layer above that level throughout and
     end at a lower loss than the baseline;
  3. without LayerNorm and the FFN nonlinearity the early layers (first half) are overloaded
     (a fraction >= OVERLOADED of heads with normalized entropy above 0.9, and more than in the
     standard model) and the band penalty at least halves that fraction.

    python -m experiments.attention_collapse [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import dataclasses

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


RUNS = {
    "baseline": Config(HIGH_LR),
    "sigma_reparam": Config(HIGH_LR, sigma_reparam=True),
    "floor": Config(HIGH_LR, floor=True),
    "standard": Config(LR, warmup=WARMUP),
    "softmax_only": Config(LR, norm=False, gelu=False, warmup=WARMUP),
    "band": Config(LR, norm=False, gelu=False, band=True, warmup=WARMUP),
}


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


def dirichlet_batch(key, size):
    """Sequences [size, LENGTH + 1] of i.i.d. tokens from a per-sequence Dirichlet(ALPHA) law."""
    kp, kt = jax.random.split(key)
    probs = jax.random.dirichlet(kp, jnp.full(VOCAB, ALPHA), (size,))
    return jax.random.categorical(kt, jnp.log(probs)[:, None, :], shape=(size, LENGTH + 1))


def forward(model, seq):
    """Cross-entropy and the per-layer attention entropies [batch, heads, query]."""
    logits, inter = nnx.capture(model, nnx.Intermediate)(seq[:, :-1])
    attn = entreg.nnx.collect(inter, entreg.nnx.ENTROPY)[entreg.nnx.ENTROPY]
    ce = entreg.cross_entropy(logits, target_probs=jax.nn.one_hot(seq[:, 1:], VOCAB))
    return ce.mean(), attn


def make_loss(cfg: Config):
    def task(model, seq):
        ce, attn = forward(model, seq)
        return ce, {"attention_entropy": attn, "theta": model.theta[...]}

    terms = []
    if cfg.floor:
        terms.append(
            losses.attention_entropy_term("floor", target=FLOOR, causal=True, weight=FLOOR_WEIGHT)
        )
    if cfg.band:
        # theta is a model Param: the optimizer learns the per-(layer, head) targets.
        terms.append(
            losses.attention_entropy_term("band", target="theta", causal=True, weight=BAND_WEIGHT)
        )
    return entreg.compose(task, *terms, base_name="task")


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


def train(cfg: Config, seed: int, data, eval_seq, label: str) -> dict[str, np.ndarray]:
    """Trains one configuration on ``data`` [chunks, EVAL_EVERY, BATCH, LENGTH + 1]; returns
    the curves measured on ``eval_seq`` every EVAL_EVERY steps, from step 0 to the end."""
    model = Transformer(cfg, nnx.Rngs(seed))
    loss_fn = make_loss(cfg)
    lr = optax.linear_schedule(0.0, cfg.lr, cfg.warmup) if cfg.warmup else cfg.lr
    optimizer = nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))

    def train_step(carry, inputs):
        state, term_state = carry
        seq, t = inputs
        model, optimizer = nnx.merge(graphdef, state)
        model.train(update_stats=True)
        # nnx.value_and_grad differentiates the Params and carries the non-Param updates
        # (sigmaReparam's power iteration, written in the forward) back into the model.
        grad_fn = nnx.value_and_grad(
            lambda m: loss_fn(m, seq, state=term_state, step=t), has_aux=True
        )
        (_, (term_state, _)), grads = grad_fn(model)
        optimizer.update(model, grads)
        return (nnx.state((model, optimizer)), term_state), None

    @jax.jit
    def chunk(state, term_state, seqs, t0):
        """Evaluates ``state``, then trains EVAL_EVERY steps (one compiled graph for both)."""
        metrics = evaluate(nnx.merge(graphdef, state)[0], eval_seq)
        inputs = (seqs, t0 + jnp.arange(EVAL_EVERY))
        (state, term_state), _ = jax.lax.scan(train_step, (state, term_state), inputs)
        return state, term_state, metrics

    term_state = loss_fn.init()
    history = []
    # The last chunk only serves its evaluation of the final state: its updates are dropped.
    for c in _harness.progress(range(len(data)), label):
        state, term_state, metrics = chunk(state, term_state, data[c], c * EVAL_EVERY)
        history.append(metrics)
    history = jax.device_get(history)
    out = {k: np.stack([h[k] for h in history]) for k in history[0]}
    out["step"] = np.arange(len(history)) * EVAL_EVERY
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
    steps, layers = (2 * EVAL_EVERY, 1) if args.quick else (600, LAYERS)
    # One data stream (fresh sequences every step) and one eval batch shared by every run.
    k_train, k_eval = jax.random.split(jax.random.key(args.seed, impl="rbg"))
    n = steps + EVAL_EVERY  # + the chunk that evaluates the final state
    data = dirichlet_batch(k_train, n * BATCH).reshape(-1, EVAL_EVERY, BATCH, LENGTH + 1)
    eval_seq = dirichlet_batch(k_eval, EVAL_BATCH)
    runs = {}
    for name, cfg in RUNS.items():
        cfg = dataclasses.replace(cfg, layers=layers)
        runs[name] = train(cfg, args.seed, data, eval_seq, name)
        runs[name]["lr"] = cfg.lr
    tail = max(len(runs["baseline"]["loss"]) // 10, 1)

    def final(name, key):
        return runs[name][key][-tail:].mean(axis=0)

    base = runs["baseline"]
    base_ratio = (base["entropy"] / base["entropy"][0]).min(axis=0)  # per layer, over training
    claims = [
        _harness.at_most(
            "baseline: min layer entropy / initial",
            base_ratio.min(),
            COLLAPSE,
            f"layer {int(base_ratio.argmin())}, lr {HIGH_LR:g}",
        ),
        _harness.at_least(
            "baseline: loss spike (max L / running min)",
            spike_ratio(base["loss"]),
            SPIKE,
            f"final loss {final('baseline', 'loss'):.3f}",
        ),
    ]
    for name in ("sigma_reparam", "floor"):
        r = runs[name]
        ratio = (r["entropy"] / r["entropy"][0]).min()
        claims.append(_harness.at_least(f"{name}: min layer entropy / initial", ratio, COLLAPSE))
        claims.append(
            _harness.at_most(
                f"{name}: final loss - baseline's",
                final(name, "loss") - final("baseline", "loss"),
                0.0,
                f"{final(name, 'loss'):.3f} vs {final('baseline', 'loss'):.3f}",
            )
        )
    half = max(layers // 2, 1)  # the early layers
    early = {n: float(final(n, "overloaded")[:half].mean()) for n in runs}
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
        "early_overloaded_fraction": early,
        "loss_spike_ratio": {n: spike_ratio(runs[n]["loss"]) for n in runs},
    }
    return _harness.report(args, claims, measured, plots)


if __name__ == "__main__":
    raise SystemExit(main())
