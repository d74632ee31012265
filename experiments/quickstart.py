"""Quickstart: a Flax NNX transformer trained with optax.adamw and composed entropy terms.

Task: sequences of random tokens; at position t the model must output the token seen LAG steps
earlier (a NOISE fraction of the targets is replaced by random tokens, so the cross-entropy keeps
pulling throughout training), so each query should attend to one key and attention entropy
collapses without a regularizer. Loss = masked cross-entropy
                 + entropy bonus on the output distribution (linearly decayed to 0)
                 + attention-entropy floor held by an adaptive (dual-ascent) coefficient.
The same model is also trained with cross-entropy alone (the unregularized baseline).

Claims checked:
  1. the task loss falls (final <= 60% of initial) in the regularized run;
  2. after warm-up the floor holds the mean attention entropy at its target: never below
     target - TOL, and on average within TOL of it (a floor binds at the bound, so the entropy
     pulses just above it while the multiplier switches on and off);
  3. the unregularized run's attention entropy falls below the target (by more than TOL), and
     ends below the regularized run's by more than TOL;
  4. the floor binds: its multiplier becomes positive (a floor whose multiplier never moves
     still ends above the baseline at --quick size, through the entropy bonus's slower start).
--quick (60 steps) checks 1, 3 and 4: the loss falls, the entropy collapses without the floor
(at about step 35) and the floor's multiplier lifts it back; 2 needs the full run.

    python -m experiments.quickstart [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import entreg
from experiments import _harness

VOCAB, LENGTH, LAG, DIM, HEADS, NOISE = 16, 16, 3, 64, 2, 0.1
TARGET, TOL = 1.2, 0.1  # attention-entropy floor (nats, mean over heads and queries)


class Block(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(DIM, rngs=rngs)
        self.attn = entreg.nnx.EntropyAttention(HEADS, DIM, rngs=rngs, decode=False)
        self.norm2 = nnx.LayerNorm(DIM, rngs=rngs)
        self.mlp1 = nnx.Linear(DIM, 2 * DIM, rngs=rngs)
        self.mlp2 = nnx.Linear(2 * DIM, DIM, rngs=rngs)

    def __call__(self, x):
        x = x + self.attn(self.norm1(x), is_causal=True)
        return x + self.mlp2(jax.nn.gelu(self.mlp1(self.norm2(x))))


class Transformer(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.embed = nnx.Embed(VOCAB, DIM, rngs=rngs)
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (LENGTH, DIM)))
        self.block = Block(rngs)
        self.head = nnx.Linear(DIM, VOCAB, rngs=rngs)

    def __call__(self, tokens):
        return self.head(self.block(self.embed(tokens) + self.pos[...]))


def batch(key, size):
    kx, kn, ky = jax.random.split(key, 3)
    x = jax.random.randint(kx, (size, LENGTH), 0, VOCAB)
    noisy = jax.random.bernoulli(kn, NOISE, x.shape)
    y = jnp.where(noisy, jax.random.randint(ky, x.shape, 0, VOCAB), jnp.roll(x, LAG, axis=1))
    mask = jnp.broadcast_to(jnp.arange(LENGTH) >= LAG, x.shape)
    return x, y, mask


def make_loss(graphdef, regularized: bool, steps: int):
    def task(params, x, y, mask):
        model = nnx.merge(graphdef, params)
        logits, inter = nnx.capture(model, nnx.Intermediate)(x)
        attn = entreg.nnx.collect(inter, "attention_entropy")["attention_entropy"]
        ce = entreg.cross_entropy(logits, target_probs=jax.nn.one_hot(y, VOCAB))
        signals = {"logits": logits, "mask": mask, "attn_entropy": jnp.stack(attn)}
        return entreg.aggregate(ce, mask, "token-mean"), signals

    attn_mean = lambda s: s["attn_entropy"].mean()  # noqa: E731
    if not regularized:
        return entreg.compose(task, entreg.ema_metric("attention", attn_mean), base_name="task")
    return entreg.compose(
        task,
        entreg.bonus(
            "entropy",
            lambda s: entreg.aggregate(entreg.entropy(s["logits"]), s["mask"], "token-mean"),
            weight=optax.linear_schedule(0.02, 0.0, steps // 2),
        ),
        entreg.constraint("attention", attn_mean, lower=TARGET, lr=0.5, damping=2.0),
        base_name="task",
    )


def train(seed: int, steps: int, regularized: bool, batch_size: int = 64):
    model = nnx.jit(Transformer)(nnx.Rngs(seed))  # one compiled initialization
    graphdef, params = nnx.split(model, nnx.Param)
    loss_fn = make_loss(graphdef, regularized, steps)
    opt = optax.adamw(3e-3, weight_decay=1e-4)
    opt_state, term_state = opt.init(params), loss_fn.init()

    @jax.jit
    def step(params, opt_state, term_state, key, t):
        x, y, mask = batch(key, batch_size)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (_, (term_state, metrics)), grads = grad_fn(params, x, y, mask, state=term_state, step=t)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, term_state, metrics

    key = jax.random.key(seed + 1)
    history = []
    label = "regularized" if regularized else "baseline"
    for t in _harness.progress(range(steps), label):
        key, sub = jax.random.split(key)
        params, opt_state, term_state, metrics = step(params, opt_state, term_state, sub, t)
        history.append(jax.device_get(metrics))
    return {k: np.array([m[k] for m in history]) for k in history[0]}


def plot(reg, base, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    axes[0].plot(reg["task/loss"], label="regularized")
    axes[0].plot(base["task/loss"], label="cross-entropy only")
    axes[0].set_title("task loss (nats/token)")
    axes[1].plot(reg["attention/value"], label="regularized")
    axes[1].plot(base["attention/value"], label="cross-entropy only")
    axes[1].axhline(TARGET, color="k", ls="--", lw=1, label="floor")
    axes[1].set_title("mean attention entropy (nats)")
    axes[2].plot(reg["attention/weight"], label="floor multiplier")
    axes[2].plot(reg["entropy/weight"], label="entropy-bonus weight")
    axes[2].set_title("term weights")
    axes[3].plot(reg["entropy/loss"], label="entropy bonus")
    axes[3].plot(reg["attention/loss"], label="attention floor")
    axes[3].set_title("weighted contributions to the loss")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    args = _harness.parse_args("quickstart", __doc__.splitlines()[0])
    steps = 60 if args.quick else 600
    reg = train(args.seed, steps, regularized=True)
    base = train(args.seed, steps, regularized=False)
    warm = steps // 2
    n = max(steps // 20, 1)
    loss0, loss1 = reg["task/loss"][:n].mean(), reg["task/loss"][-n:].mean()
    held = reg["attention/value"][warm:]
    base_final = base["attention/value"][-n:].mean()
    reg_final = reg["attention/value"][-n:].mean()
    claims = [
        _harness.at_most(
            "task loss final / initial",
            loss1 / loss0,
            0.6,
            f"{loss0:.3f} -> {loss1:.3f} nats/token",
            quick=True,
        ),
        _harness.at_least(
            "min attention H after warm-up",
            held.min(),
            TARGET - TOL,
            f"target {TARGET}, steps {warm}..{steps}",
        ),
        _harness.at_most(
            "|mean attention H - target| after warm-up",
            abs(held.mean() - TARGET),
            TOL,
            f"mean {held.mean():.3f}",
        ),
        _harness.at_most(
            "baseline final attention H",
            base_final,
            TARGET - TOL,
            f"initial {base['attention/value'][0]:.3f}",
            quick=True,
        ),
        _harness.at_least(
            "floor multiplier: max over steps",
            float(reg["attention/weight"].max()),
            1e-6,
            f"step of the first positive value: {int(np.argmax(reg['attention/weight'] > 0))}",
            quick=True,
        ),
        _harness.at_least(
            "regularized - baseline final attention H",
            reg_final - base_final,
            TOL,
            f"{reg_final:.3f} vs {base_final:.3f}",
            quick=True,
        ),
    ]
    path = args.out / "quickstart.png"
    plot(reg, base, path)
    measured = {
        "steps": steps,
        "task_loss_initial": float(loss0),
        "task_loss_final": float(loss1),
        "baseline_task_loss_final": float(base["task/loss"][-n:].mean()),
        "attention_entropy_final": float(reg["attention/value"][-n:].mean()),
        "baseline_attention_entropy_final": float(base_final),
        "floor_multiplier_final": float(reg["attention/weight"][-1]),
    }
    return _harness.report(args, claims, measured, [path])


if __name__ == "__main__":
    raise SystemExit(main())
