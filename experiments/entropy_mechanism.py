"""The entropy mechanism of RL for reasoning LMs (Cui et al. 2025), reproduced on a toy RLVR task.

Task (verifiable reward): a prompt is a target residue c in [0, MOD); the policy writes T tokens
in [0, V) and is correct iff their sum is c mod MOD (chance 1/MOD; V^T / MOD correct answers per
prompt, so high accuracy and high entropy are compatible). The verifier is noisy: the training
reward flips with probability FLIP, so groups keep mixed outcomes (as on hard problems) instead of
all turning correct, which would zero every GRPO advantage and freeze the policy. Reported
"reward" is the noiseless accuracy. The policy is a small recurrent network sampled
autoregressively. Training: GRPO groups of G responses per prompt, group-normalized advantages,
several PPO mini-batch updates per rollout (so later updates are off-policy, where KL-Cov's
|log-ratio| penalty acts). Methods, over the same seeds:

  vanilla   GRPO with the PPO clip (eps 0.2, dual clip 3)
  bonus     vanilla + entropy bonus (coef ENTROPY_COEF)
  clip_cov  Clip-Cov (band (1, 5), eps 1 as in the paper's recipes)
  kl_cov    KL-Cov (beta 1)
  steer     STEER-weighted PPO (linear mode)

Scaled ratios: the paper's r = 2e-4 (Clip-Cov) and k = 2e-3 (KL-Cov) act on ~10^6 tokens per
update; a mini-batch here has 128 tokens, where both would select the minimum of one token. They
are set to CLIP_COV_RATIO = 5e-3 (still one token per mini-batch: larger values, 1e-2 and up,
zero out the tokens that carry the learning signal and stall training at chance) and
KL_COV_RATIO = 2e-2 (two tokens per mini-batch).

Claims checked (means over seeds):
  1. vanilla entropy collapses (falls by more than 80% of its initial value) while reward rises;
  2. Clip-Cov and KL-Cov sustain at least 3x vanilla's final entropy at equal or better reward
     (final reward >= vanilla's - REWARD_TOL);
  3. R = -a exp(H) + b fits the vanilla run with R^2 >= 0.9;
  4. on a tabular softmax policy, the measured per-step entropy change correlates >= 0.9 with
     the first-order prediction -Cov(log pi, dz).

    python -m experiments.entropy_mechanism [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

import entreg
from entreg import losses
from experiments import _harness

V, T, HIDDEN = 8, 4, 64  # vocabulary, response length, recurrent width
MOD = 4  # reward 1 iff sum(response) = prompt (mod MOD): chance 1 / MOD
FLIP = 0.1  # verifier noise: the training reward is flipped with this probability
PROMPTS, GROUP, MINIBATCHES = 16, 8, 4  # rollout = PROMPTS x GROUP responses
LR = 3e-3
ENTROPY_COEF = 0.005
CLIP_COV_RATIO, KL_COV_RATIO = 5e-3, 2e-2
REWARD_TOL = 0.02
METHODS = ("vanilla", "bonus", "clip_cov", "kl_cov", "steer")


def init_params(key):
    k = jax.random.split(key, 4)
    scale = 1.0 / np.sqrt(HIDDEN)
    return {
        "prompt": jax.random.normal(k[0], (V, HIDDEN)),
        "token": jax.random.normal(k[1], (V + 1, HIDDEN)),  # index V = begin-of-response
        "w": scale * jax.random.normal(k[2], (HIDDEN, HIDDEN)),
        "b": jnp.zeros(HIDDEN),
        "out": 0.01 * jax.random.normal(k[3], (HIDDEN, V)),  # near-uniform initial policy
    }


def cell(params, h, prev):
    return jnp.tanh(h @ params["w"] + params["token"][prev] + params["b"])


def rollout(params, prompts, key):
    """Samples responses [N, T]; returns them with the rollout logits [N, T, V]."""

    def step(carry, k):
        h, prev = carry
        h = cell(params, h, prev)
        logits = h @ params["out"]
        y = jax.random.categorical(k, logits)
        return (h, y), (y, logits)

    h0 = jnp.tanh(params["prompt"][prompts])
    prev0 = jnp.full(prompts.shape, V)
    _, (ys, logits) = jax.lax.scan(step, (h0, prev0), jax.random.split(key, T))
    return ys.T, jnp.swapaxes(logits, 0, 1)


def teacher_forced_logits(params, prompts, responses):
    def step(h, prev):
        h = cell(params, h, prev)
        return h, h @ params["out"]

    prev = jnp.concatenate([jnp.full((prompts.shape[0], 1), V), responses[:, :-1]], axis=1)
    _, logits = jax.lax.scan(step, jnp.tanh(params["prompt"][prompts]), prev.T)
    return jnp.swapaxes(logits, 0, 1)


def policy_loss(method, params, batch, key):
    prompts, responses, old_log_prob, adv, mask = batch
    logits = teacher_forced_logits(params, prompts, responses)
    log_prob, ent = losses.token_log_probs(logits, responses)
    if method == "vanilla":
        per_token, _ = losses.ppo_loss(log_prob, old_log_prob, adv, mask)
    elif method == "bonus":
        per_token, _ = losses.ppo_loss(
            log_prob, old_log_prob, adv, mask, entropy=ent, entropy_coef=ENTROPY_COEF
        )
    elif method == "clip_cov":
        per_token, _ = losses.clip_cov_loss(
            log_prob, old_log_prob, adv, mask, key=key, ratio=CLIP_COV_RATIO
        )
    elif method == "kl_cov":
        per_token, _ = losses.kl_cov_loss(log_prob, old_log_prob, adv, mask, ratio=KL_COV_RATIO)
    else:
        per_token, _ = losses.steer_loss(
            log_prob, old_log_prob, adv, mask, entropy=jax.lax.stop_gradient(ent)
        )
    return entreg.aggregate(per_token, mask, "token-mean")


def make_train_chunk(method: str, chunk: int):
    opt = optax.adam(LR)

    def rl_step(carry, key):
        params, opt_state = carry
        k_prompt, k_roll, k_sel, k_flip = jax.random.split(key, 4)
        prompts = jnp.repeat(jax.random.randint(k_prompt, (PROMPTS,), 0, MOD), GROUP)
        responses, logits = rollout(params, prompts, k_roll)
        correct = jnp.sum(responses, axis=1) % MOD == prompts
        reward = (correct ^ jax.random.bernoulli(k_flip, FLIP, correct.shape)).astype(jnp.float32)
        adv = losses.grpo_advantages(reward.reshape(PROMPTS, GROUP)).reshape(-1)
        old_log_prob, ent = losses.token_log_probs(logits, responses)
        mask = jnp.ones(responses.shape, bool)
        batch = (prompts, responses, old_log_prob, jnp.repeat(adv[:, None], T, 1), mask)
        # Mini-batches of whole groups; after the first update the policy is off-policy.
        mb = jax.tree.map(lambda x: x.reshape(MINIBATCHES, -1, *x.shape[1:]), batch)

        def update(carry, inputs):
            params, opt_state = carry
            mb_batch, k = inputs
            grads = jax.grad(functools.partial(policy_loss, method))(params, mb_batch, k)
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        keys = jax.random.split(k_sel, MINIBATCHES)
        (params, opt_state), _ = jax.lax.scan(update, (params, opt_state), (mb, keys))
        metrics = {"entropy": jnp.mean(ent), "reward": jnp.mean(correct)}
        return (params, opt_state), metrics

    @jax.jit
    @jax.vmap  # over seeds
    def train_chunk(params, opt_state, key):
        (params, opt_state), metrics = jax.lax.scan(
            rl_step, (params, opt_state), jax.random.split(key, chunk)
        )
        return params, opt_state, metrics

    return opt, train_chunk


def train(method: str, seeds: list[int], steps: int, chunk: int) -> dict[str, np.ndarray]:
    """Trains one method for every seed at once (vmapped); returns [seeds, steps] curves."""
    opt, train_chunk = make_train_chunk(method, chunk)
    params = jax.vmap(init_params)(jnp.stack([jax.random.key(s) for s in seeds]))
    opt_state = jax.vmap(opt.init)(params)
    keys = jnp.stack([jax.random.key(10_000 + s) for s in seeds])
    history = []
    for _ in _harness.progress(range(steps // chunk), method):
        keys, sub = jax.vmap(lambda k: tuple(jax.random.split(k)))(keys)
        params, opt_state, metrics = train_chunk(params, opt_state, sub)
        history.append(jax.device_get(metrics))
    return {k: np.concatenate([h[k] for h in history], axis=1) for k in history[0]}


def tabular_entropy_dynamics(seed: int, steps: int, arms: int = 32, samples: int = 64):
    """Sampled REINFORCE on a softmax bandit: actual vs first-order predicted entropy change."""
    key = jax.random.key(seed)
    k_z, k_r, key = jax.random.split(key, 3)
    z = jax.random.normal(k_z, (arms,))
    arm_reward = jax.random.uniform(k_r, (arms,))
    lr = 0.5

    @jax.jit
    def step(z, key):
        a = jax.random.categorical(key, z, shape=(samples,))
        r = arm_reward[a]
        adv = r - r.mean()
        # Sample estimate of grad_z E[r] = mean_i A_i (onehot(a_i) - pi); ascent step.
        dz = lr * jnp.mean(adv[:, None] * (jax.nn.one_hot(a, arms) - jax.nn.softmax(z)), 0)
        predicted = losses.first_order_entropy_change(z, dz)
        actual = entreg.entropy(z + dz) - entreg.entropy(z)
        return z + dz, (predicted, actual)

    _, (pred, actual) = jax.lax.scan(step, z, jax.random.split(key, steps))
    return np.asarray(pred), np.asarray(actual)


def binned(x: np.ndarray, bins: int) -> np.ndarray:
    return x[: len(x) // bins * bins].reshape(bins, -1).mean(axis=1)


def plot(curves, fit_h, fit_r, fit, pred, actual, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(19, 3.8))
    for m in METHODS:
        axes[0].plot(curves[m]["entropy"].mean(0), label=m)
        axes[1].plot(curves[m]["reward"].mean(0), label=m)
    axes[0].set_title("policy entropy (nats/token, mean over seeds)")
    axes[1].set_title("training reward (mean over seeds)")
    for ax in axes[:2]:
        ax.set_xlabel("RL step")
        ax.legend(fontsize=8)
    hs = np.linspace(fit_h.min(), fit_h.max(), 100)
    axes[2].scatter(fit_h, fit_r, s=12, label="vanilla (binned)")
    axes[2].plot(hs, fit.predict(hs), "k--", label=f"R = -{fit.a:.3f} e^H + {fit.b:.3f}")
    axes[2].set_xlabel("entropy H")
    axes[2].set_ylabel("reward R")
    axes[2].set_title(f"entropy-performance law, R^2 = {fit.r2:.3f}")
    axes[2].legend(fontsize=8)
    axes[3].scatter(pred, actual, s=6)
    lim = [min(pred.min(), actual.min()), max(pred.max(), actual.max())]
    axes[3].plot(lim, lim, "k--", lw=1)
    axes[3].set_xlabel("-Cov(log pi, dz)")
    axes[3].set_ylabel("actual entropy change")
    axes[3].set_title("tabular softmax: first-order prediction")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    args = _harness.parse_args("entropy_mechanism", __doc__.splitlines()[0])
    steps, chunk, n_seeds, bins = (20, 10, 1, 5) if args.quick else (400, 25, 6, 40)
    seeds = [args.seed + i for i in range(n_seeds)]
    curves = {m: train(m, seeds, steps, chunk) for m in METHODS}

    tail = max(steps // 10, 1)

    def final(m, k):
        return float(curves[m][k][:, -tail:].mean())

    def initial(m, k):
        return float(curves[m][k][:, :tail].mean())

    h0, h1 = initial("vanilla", "entropy"), final("vanilla", "entropy")
    r0, r1 = initial("vanilla", "reward"), final("vanilla", "reward")
    fit_h = binned(curves["vanilla"]["entropy"].mean(0), bins)
    fit_r = binned(curves["vanilla"]["reward"].mean(0), bins)
    fit = losses.fit_entropy_reward(fit_h, fit_r)
    pred, actual = tabular_entropy_dynamics(args.seed, 60 if args.quick else 400)
    corr = float(np.corrcoef(pred, actual)[0, 1])

    claims = [
        _harness.at_least(
            "vanilla entropy drop (fraction)", 1 - h1 / h0, 0.8, f"H {h0:.3f} -> {h1:.4f}"
        ),
        _harness.at_least("vanilla reward rise", r1 - r0, 0.3, f"R {r0:.3f} -> {r1:.3f}"),
    ]
    for m in ("clip_cov", "kl_cov"):
        claims.append(
            _harness.at_least(
                f"{m} final H / vanilla final H",
                final(m, "entropy") / h1,
                3.0,
                f"H {final(m, 'entropy'):.4f} vs {h1:.4f}",
            )
        )
        claims.append(
            _harness.at_least(
                f"{m} final R - vanilla final R",
                final(m, "reward") - r1,
                -REWARD_TOL,
                f"R {final(m, 'reward'):.3f} vs {r1:.3f}",
            )
        )
    claims += [
        _harness.at_least(
            "R = -a exp(H) + b fit R^2 (vanilla)",
            float(fit.r2),
            0.9,
            f"a {float(fit.a):.3f}, b {float(fit.b):.3f}, {bins} bins",
        ),
        _harness.at_least(
            "tabular corr(actual dH, -Cov(log pi, dz))", corr, 0.9, f"{len(pred)} steps"
        ),
    ]
    path = args.out / "entropy_mechanism.png"
    plot(curves, fit_h, fit_r, fit, pred, actual, path)
    measured = {
        "steps": steps,
        "seeds": seeds,
        "clip_cov_ratio": CLIP_COV_RATIO,
        "kl_cov_ratio": KL_COV_RATIO,
        "final": {
            m: {"entropy": final(m, "entropy"), "reward": final(m, "reward")} for m in METHODS
        },
        "initial_entropy": h0,
        "fit": {"a": float(fit.a), "b": float(fit.b), "r2": float(fit.r2)},
        "tabular_correlation": corr,
    }
    return _harness.report(args, claims, measured, [path])


if __name__ == "__main__":
    raise SystemExit(main())
