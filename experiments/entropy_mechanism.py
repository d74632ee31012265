"""The entropy mechanism of RL for reasoning LMs (Cui et al. 2025), reproduced on a toy RLVR task.

Task (verifiable reward): a prompt is a target residue c in [0, MOD); the policy writes T tokens
in [0, V) and is correct iff their sum is c mod MOD (chance 1/MOD; V^T / MOD correct answers per
prompt, so high accuracy and high entropy are compatible). The verifier is noisy: the training
reward flips with probability FLIP, so groups keep mixed outcomes (as on hard problems) instead of
all turning correct, which would zero every GRPO advantage and freeze the policy. Reported
"reward" is the noiseless accuracy. The policy is a small recurrent network sampled
autoregressively. Training: GRPO groups of G responses per prompt, group-normalized advantages,
several PPO mini-batch Adam updates per rollout (so later updates are off-policy, where KL-Cov's
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
KL_COV_RATIO = 1e-1 (12 tokens per mini-batch; at 2e-2, two tokens, KL-Cov's final entropy was
only 2.3-3.1x vanilla's over 6 seeds, at 5e-2 2.5x, at 1e-1 7.9x, at equal reward).

The mechanism (the paper's Sec. 3): for a softmax policy an update changes the entropy by
-Cov_{a~pi}(log pi(a), dz_a) to first order, which under policy gradient is -eta Cov(log pi, A)
(natural PG) or -eta Cov(log pi, pi A) (vanilla PG). Checked here against the entropy change of
the update that training actually applies (every PPO mini-batch Adam step of one RL step), on
the rollout's states: dH = H(pi_new) - H(pi_old), with both forms of the covariance estimated
from the rollout batch as Clip-Cov / KL-Cov do (`losses.token_covariance`). Two tests:
  along training: every vanilla RL step (all seeds) until entropy has collapsed (H > 10% of its
    initial value; after that both sides are round-off), correlation of dH with -Cov and
    agreement of their signs, balanced over steps where entropy rose and fell (a predictor
    that always says "entropy falls" scores 0.5); the steps where the sign disagrees count;
  at a fixed policy: at checkpoints along training, BRANCHES independent rollout batches each
    get the same actual update from the same parameters and optimizer state; the correlation
    of dH with -Cov across them cannot come from a shared trend (training phase, entropy
    level), only from the batch's covariance.

Claims checked (means over seeds):
  1. vanilla entropy collapses (falls by more than 80% of its initial value) while reward rises;
  2. Clip-Cov and KL-Cov sustain at least 3x vanilla's final entropy at equal or better reward
     (final reward >= vanilla's - REWARD_TOL);
  3. R = -a exp(H) + b fits the vanilla run with R^2 >= 0.9;
  4. along training, corr(dH, -Cov(log pi, A)) and corr(dH, -Cov(log pi, pi A)) >= 0.5 and
     their balanced sign agreement >= 0.6 (chance: 0.5);
  5. at a fixed policy, the mean over checkpoints of corr(dH, -Cov) across branches >= 0.4
     (the --quick claim: 3 checkpoints of one seed).

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
CLIP_COV_RATIO, KL_COV_RATIO = 5e-3, 1e-1
REWARD_TOL = 0.02
METHODS = ("vanilla", "bonus", "clip_cov", "kl_cov", "steer")
ALIVE = 0.1  # the mechanism is tested while H > ALIVE x its initial value
BRANCHES = 64  # independent rollout batches per fixed-policy checkpoint
FORMS = {"cov": "Cov(log pi, A)", "cov_pg": "Cov(log pi, pi A)"}


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


def make_rl_step(method: str, opt):
    """One RL step: rollout, GRPO advantages, the PPO mini-batch updates, and the mechanism's
    two sides: the entropy change of those updates on the rollout's states and the covariance
    forms estimated from the rollout."""

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
        adv = jnp.repeat(adv[:, None], T, 1)
        batch = (prompts, responses, old_log_prob, adv, mask)
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
        _, ent_after = losses.token_log_probs(
            teacher_forced_logits(params, prompts, responses), responses
        )
        prob_adv = jnp.exp(old_log_prob) * adv
        metrics = {
            "entropy": jnp.mean(ent),
            "reward": jnp.mean(correct),
            "dH": jnp.mean(ent_after - ent),
            "cov": jnp.mean(losses.token_covariance(old_log_prob, adv, mask)),
            "cov_pg": jnp.mean(losses.token_covariance(old_log_prob, prob_adv, mask)),
        }
        return (params, opt_state), metrics

    return rl_step


def train(method: str, seeds: list[int], steps: int, chunk: int, checkpoints=()):
    """Trains one method for every seed at once (vmapped); returns [seeds, steps] curves and,
    at each step in ``checkpoints``, the metrics of BRANCHES independent RL steps taken from the
    current parameters and optimizer state ([seeds, checkpoints, BRANCHES])."""
    opt = optax.adam(LR)
    rl_step = make_rl_step(method, opt)

    @jax.jit
    @jax.vmap  # over seeds
    def train_chunk(params, opt_state, key):
        return jax.lax.scan(rl_step, (params, opt_state), jax.random.split(key, chunk))

    @jax.jit
    @jax.vmap  # over seeds
    def branches(params, opt_state, key):
        keys = jax.random.split(key, BRANCHES)
        return jax.vmap(lambda k: rl_step((params, opt_state), k)[1])(keys)

    @jax.jit
    def init(seeds):
        params = jax.vmap(lambda s: init_params(jax.random.key(s)))(seeds)
        keys = jax.vmap(lambda s: jax.random.key(10_000 + s))(seeds)
        return params, jax.vmap(opt.init)(params), keys

    params, opt_state, keys = init(jnp.asarray(seeds))
    history, branched = [], []
    for c in _harness.progress(range(steps // chunk + 1), method):
        if c * chunk in checkpoints:
            k_branch = jax.vmap(lambda k, c=c: jax.random.fold_in(k, 1_000_000 + c))(keys)
            branched.append(jax.device_get(branches(params, opt_state, k_branch)))
        if c * chunk < steps:
            keys, k_train = jax.vmap(lambda k: tuple(jax.random.split(k)))(keys)
            (params, opt_state), metrics = train_chunk(params, opt_state, k_train)
            history.append(jax.device_get(metrics))
    curves = {k: np.concatenate([h[k] for h in history], axis=1) for k in history[0]}
    if branched:
        curves["branches"] = {k: np.stack([b[k] for b in branched], axis=1) for k in branched[0]}
    return curves


def balanced_sign_agreement(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Mean over {steps where entropy rose, steps where it fell} of the fraction whose predicted
    sign is right: 0.5 for a constant or random predictor."""
    rose = actual > 0
    if rose.all() or not rose.any():
        return float("nan")  # undefined without both kinds of step
    return 0.5 * float(np.mean(predicted[rose] > 0) + np.mean(predicted[~rose] <= 0))


def mechanism(curves) -> dict:
    """The covariance forms against the actual entropy change, along training and at fixed
    policies."""
    h = curves["entropy"]
    alive = h > ALIVE * h[:, :1]
    dh = curves["dH"][alive]
    out = {"steps": int(alive.sum()), "entropy_rose": int(np.sum(dh > 0))}
    for form in FORMS:
        pred = -curves[form][alive]
        out[form] = {
            "corr": float(np.corrcoef(pred, dh)[0, 1]),
            "sign": balanced_sign_agreement(pred, dh),
            "sign_disagreements": int(np.sum((pred > 0) != (dh > 0))),
        }
    both = (curves["cov"][alive] > 0) != (curves["cov_pg"][alive] > 0)
    out["forms_disagree"] = {
        "steps": int(both.sum()),
        **{
            f"{f}_right": int(np.sum((-curves[f][alive][both] > 0) == (dh[both] > 0)))
            for f in FORMS
        },
    }
    b = curves["branches"]  # [seeds, checkpoints, BRANCHES]
    corr = np.array(
        [
            [np.corrcoef(-b["cov"][s, c], b["dH"][s, c])[0, 1] for c in range(b["dH"].shape[1])]
            for s in range(b["dH"].shape[0])
        ]
    )
    out["fixed_policy"] = {
        "corr": corr.tolist(),
        "mean_corr": float(corr.mean()),
        "min_corr": float(corr.min()),
        "entropy": b["entropy"].mean(axis=2).tolist(),
        "fraction_entropy_rose": (b["dH"] > 0).mean(axis=2).tolist(),
    }
    return out


def binned(x: np.ndarray, bins: int) -> np.ndarray:
    return x[: len(x) // bins * bins].reshape(bins, -1).mean(axis=1)


def plot(curves, fit_h, fit_r, fit, checkpoints, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 5, figsize=(24, 3.8))
    for m in curves:
        axes[0].plot(curves[m]["entropy"].mean(0), label=m)
        axes[1].plot(curves[m]["reward"].mean(0), label=m)
    axes[0].set_title("policy entropy (nats/token, mean over seeds)")
    axes[1].set_title("accuracy (mean over seeds)")
    for ax in axes[:2]:
        ax.set_xlabel("RL step")
        ax.legend(fontsize=8)
    if fit is not None:
        hs = np.linspace(fit_h.min(), fit_h.max(), 100)
        axes[2].scatter(fit_h, fit_r, s=12, label="vanilla (binned)")
        axes[2].plot(hs, fit.predict(hs), "k--", label=f"R = -{fit.a:.3f} e^H + {fit.b:.3f}")
        axes[2].set_title(f"entropy-performance law, R^2 = {fit.r2:.3f}")
        axes[2].legend(fontsize=8)
    axes[2].set_xlabel("entropy H")
    axes[2].set_ylabel("accuracy R")
    c = curves["vanilla"]
    alive = c["entropy"] > ALIVE * c["entropy"][:, :1]
    steps = np.broadcast_to(np.arange(alive.shape[1]), alive.shape)
    sc = axes[3].scatter(-c["cov"][alive], c["dH"][alive], s=5, c=steps[alive], cmap="viridis")
    fig.colorbar(sc, ax=axes[3], label="RL step")
    axes[3].axhline(0, color="k", lw=0.5)
    axes[3].axvline(0, color="k", lw=0.5)
    axes[3].set_xlabel("-Cov(log pi, A) of the rollout")
    axes[3].set_ylabel("entropy change of the update")
    axes[3].set_title("vanilla, along training (until collapse)")
    b = c["branches"]
    for j, step in enumerate(checkpoints):
        x, y = -b["cov"][0, j], b["dH"][0, j]
        axes[4].scatter(
            (x - x.mean()) / x.std(), (y - y.mean()) / y.std(), s=5, label=f"step {step}"
        )
    axes[4].set_xlabel("-Cov(log pi, A), standardized per checkpoint")
    axes[4].set_ylabel("entropy change, standardized")
    axes[4].set_title(f"fixed policy: {BRANCHES} rollout batches per checkpoint")
    axes[4].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    args = _harness.parse_args("entropy_mechanism", __doc__.splitlines()[0])
    if args.quick:  # the mechanism at fixed policies only: one method, one seed, 20 steps
        steps, chunk, n_seeds, bins, methods = 20, 10, 1, 5, ("vanilla",)
        checkpoints = (0, 10, 20)
    else:
        steps, chunk, n_seeds, bins, methods = 400, 25, 6, 40, METHODS
        checkpoints = (0, 25, 50, 75, 100, 150, 200)
    seeds = [args.seed + i for i in range(n_seeds)]
    curves = {
        m: train(m, seeds, steps, chunk, checkpoints if m == "vanilla" else ()) for m in methods
    }
    mech = mechanism(curves["vanilla"])
    fixed = mech["fixed_policy"]

    tail = max(steps // 10, 1)

    def final(m, k):
        return float(curves[m][k][:, -tail:].mean())

    def initial(m, k):
        return float(curves[m][k][:, :tail].mean())

    h0, h1 = initial("vanilla", "entropy"), final("vanilla", "entropy")
    r0, r1 = initial("vanilla", "reward"), final("vanilla", "reward")
    claims = [
        _harness.at_least(
            "vanilla entropy drop (fraction)", 1 - h1 / h0, 0.8, f"H {h0:.3f} -> {h1:.4f}"
        ),
        _harness.at_least("vanilla reward rise", r1 - r0, 0.3, f"R {r0:.3f} -> {r1:.3f}"),
    ]
    fit = fit_h = fit_r = None
    if not args.quick:
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
        fit_h = binned(curves["vanilla"]["entropy"].mean(0), bins)
        fit_r = binned(curves["vanilla"]["reward"].mean(0), bins)
        fit = losses.fit_entropy_reward(fit_h, fit_r)
        claims.append(
            _harness.at_least(
                "R = -a exp(H) + b fit R^2 (vanilla)",
                float(fit.r2),
                0.9,
                f"a {float(fit.a):.3f}, b {float(fit.b):.3f}, {bins} bins",
            )
        )
    for form, label in FORMS.items():
        m = mech[form]
        detail = f"{mech['steps']} steps ({mech['entropy_rose']} with rising H)"
        claims += [
            _harness.at_least(f"training: corr(dH, -{label})", m["corr"], 0.5, detail),
            _harness.at_least(
                f"training: balanced sign agreement, -{label}",
                m["sign"],
                0.6,
                f"{m['sign_disagreements']} of {mech['steps']} steps disagree with dH; right on "
                f"{mech['forms_disagree'][f'{form}_right']} of the "
                f"{mech['forms_disagree']['steps']} where the two forms disagree",
            ),
        ]
    claims.append(
        _harness.at_least(
            "fixed policy: mean corr(dH, -Cov(log pi, A)) over branches",
            fixed["mean_corr"],
            0.4,
            f"min {fixed['min_corr']:.2f} over {len(seeds)} seed(s) x checkpoints "
            f"{', '.join(map(str, checkpoints))}, {BRANCHES} batches each",
            quick=True,
        )
    )
    path = args.out / "entropy_mechanism.png"
    plot(curves, fit_h, fit_r, fit, checkpoints, path)
    measured = {
        "steps": steps,
        "seeds": seeds,
        "clip_cov_ratio": CLIP_COV_RATIO,
        "kl_cov_ratio": KL_COV_RATIO,
        "final": {
            m: {"entropy": final(m, "entropy"), "reward": final(m, "reward")} for m in curves
        },
        "initial_entropy": h0,
        "fit": None if fit is None else {"a": float(fit.a), "b": float(fit.b), "r2": float(fit.r2)},
        "mechanism": mech,
        "checkpoints": list(checkpoints),
    }
    return _harness.report(args, claims, measured, [path])


if __name__ == "__main__":
    raise SystemExit(main())
