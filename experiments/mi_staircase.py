"""The MI staircase (Poole et al. 2019; Song & Ermon 2020): variational bounds, KSG and
O-information on correlated Gaussians with known mutual information.

Data: x ~ N(0, I_20), y = rho x + sqrt(1 - rho^2) eps, whose MI -(d/2) log(1 - rho^2) steps
through 2, 4, 6, 8, 10 nats; the cubic variant feeds y^3 instead (same MI, harder critic).
Critics: separable f(x, y) = g(x)^T h(y), two ReLU MLPs 20-128-128-32 (Poole et al.'s
notebook uses 256 hidden units), one per estimator, trained with optax Adam (lr 5e-4, batch 64,
as the papers) for STEPS steps per level (the papers: 4000), the staircase continuing from the
previous level. At the end of each level the critics are frozen and every estimator is scored on
EVAL fresh batches: mean and variance per level. The same bounds are also evaluated on the
closed-form optimal critic log r. The cubic variant uses y^3 / sqrt(15) (unit variance; an
invertible map, so the MI is unchanged). ``--quick`` runs the Gaussian staircase only, with 150
steps per level, and skips the JS study of claim 4.

Estimators (entreg.mi_bounds): InfoNCE, NWJ, MINE (EMA decay 0.99), SMILE (tau = 5), and JS
(I_JS: trained on the f-GAN JS objective, reported as NWJ(f + 1); also scored as NWJ(f)).

Claims:
  1. InfoNCE never exceeds log(batch) = 4.16 on any batch, and saturates there at high MI: at
     8 and 10 nats it is within 0.6 of log(64) while >= 3.5 nats below the truth;
  2. NWJ and MINE (its DV value) follow the MI with a variance that grows with it: on the
     closed-form optimal critics (the object of Song & Ermon's variance theorem) their mean is
     >= 0.9 x the truth at every level, and the variance at 10 nats is >= 10x the one at 2
     nats (trained-critic variances and ratios are reported next to them);
  3. SMILE (tau = 5) has a lower variance than NWJ at 8 and 10 nats, at the cost of bias: on
     the SMILE-trained critic, var(SMILE) <= 0.5 var(NWJ(f + 1)) at both levels, and the
     clipping moves the 10-nat estimate by >= 0.05 nats from the unclipped DV;
  4. a JS-trained critic scored with NWJ is low by 1/e = 0.368: for 4 critics trained on the
     JS objective alone (d = 2, 1 nat, 1000 steps, where they get close to the JS optimum) the
     mean NWJ(f + 1) - NWJ(f) is within 0.1 of 1/e (TFP's "1 + log r is the JS optimum" would
     give 2 - e = -0.72; the d = 20 staircase critics are reported, their partition term drifts);
  5. KSG (k = 3) matches the closed form within two standard errors (over 8 draws) at low
     dimension (d = 1 and 2, 0.5 nats, N = 1000) and is biased low at d = 20, 10 nats,
     N = 2000 (<= 50% of the truth);
  6. Gaussian O-information: three noisy copies of one source are redundancy-dominated
     (Omega > 0), X3 = X1 + X2 + noise is synergy-dominated (Omega < 0), in closed form and as
     estimated from 2000 samples with kNN (Kozachenko-Leonenko) entropies.
Numbers per level are printed next to the truth and written to results.json.

    python -m experiments.mi_staircase [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

import entreg
from experiments import _harness

DIM, BATCH, LEVELS = 20, 64, (2.0, 4.0, 6.0, 8.0, 10.0)
HIDDEN, EMBED, LR = 128, 32, 5e-4
ESTIMATORS = ("infonce", "nwj", "mine", "smile", "js")
STEPS, EVAL, CHUNK = 2000, 256, 100
QUICK_STEPS, QUICK_EVAL = 150, 32
MINE_DECAY, SMILE_TAU = 0.99, 5.0
JS_STEPS = 1000


def rho_for(mi: float, dim: int = DIM) -> float:
    return math.sqrt(1.0 - math.exp(-2.0 * mi / dim))


def sample(key, rho, cubic, n: int = BATCH, dim: int = DIM):
    kx, ke = jax.random.split(key)
    x = jax.random.normal(kx, (n, dim))
    y = rho * x + jnp.sqrt(1.0 - rho**2) * jax.random.normal(ke, (n, dim))
    # y^3 / sqrt(15) has unit variance (E y^6 = 15): an invertible map, so the MI is unchanged.
    return x, jnp.where(cubic, y**3 / math.sqrt(15.0), y)


def mlp_init(key, sizes):
    """He-normal hidden layers; the output layer scaled down so that the first critic scores
    are near 0 (an exponential partition term of scores ~ 10 stalls NWJ and MINE)."""
    keys = jax.random.split(key, len(sizes) - 1)
    layers = [
        (jax.random.normal(k, (a, b)) * math.sqrt(2.0 / a), jnp.zeros(b))
        for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]
    w, b = layers[-1]
    return [*layers[:-1], (0.1 * w, b)]


def mlp(params, x):
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return x @ w + b


def critic_init(key):
    kg, kh = jax.random.split(key)
    sizes = (DIM, HIDDEN, HIDDEN, EMBED)
    return {"g": mlp_init(kg, sizes), "h": mlp_init(kh, sizes)}


def scores(params, x, y):
    return entreg.separable_scores(mlp(params["g"], x), mlp(params["h"], y))


def objective(name, s, mine_state):
    """(training objective, reported value, new MINE state) of one estimator on scores s."""
    if name == "infonce":
        v = entreg.infonce_bound(s)
    elif name == "nwj":
        v = entreg.nwj_bound(s)
    elif name == "mine":
        v, mine_state = entreg.mine_bound(s, mine_state, decay=MINE_DECAY)
    elif name == "smile":
        v = entreg.smile_bound(s, tau=SMILE_TAU)
    else:
        v = entreg.js_bound(s)
    return v, mine_state


def make_train(optimizer):
    def loss(params, x, y, mine_state):
        values, new_mine = {}, mine_state
        total = 0.0
        for name in ESTIMATORS:
            v, st = objective(name, scores(params[name], x, y), mine_state)
            if name == "mine":
                new_mine = st
            values[name] = v
            total = total - v
        return total, (values, new_mine)

    @jax.jit
    def train(carry, keys, rho, cubic):
        def step(carry, key):
            params, opt_state, mine_state = carry
            x, y = sample(key, rho, cubic)
            grads, (values, mine_state) = jax.grad(loss, has_aux=True)(params, x, y, mine_state)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return (params, opt_state, mine_state), jnp.stack([values[n] for n in ESTIMATORS])

        return jax.lax.scan(step, carry, keys)

    return train


@jax.jit
def evaluate(params, keys, rho, cubic):
    """Per fresh batch, critics frozen: each estimator on its own critic, the JS critic also as
    NWJ(f) (unshifted), and the SMILE critic (trained on the JS gradient) also as NWJ(f + 1) and
    DV(f), so that SMILE is compared with NWJ on one critic."""

    def one(key):
        x, y = sample(key, rho, cubic)
        out = {}
        for name in ESTIMATORS:
            s = scores(params[name], x, y)
            # MINE's estimate is the DV value of its critic.
            out[name] = entreg.dv_bound(s) if name == "mine" else objective(name, s, None)[0]
        s_js, s_smile = scores(params["js"], x, y), scores(params["smile"], x, y)
        out["js_nwj_unshifted"] = entreg.nwj_bound(s_js)
        out["smile_critic_nwj"] = entreg.nwj_bound(s_smile + 1.0)
        out["smile_critic_dv"] = entreg.dv_bound(s_smile)
        return out

    return jax.lax.map(one, keys)


def log_ratio(x, y, rho):
    """The optimal critic log r(x, y) = log N(y; rho x, (1 - rho^2) I) - log N(y; 0, I), all
    pairs [B, B]."""
    v = 1.0 - rho**2
    quad = jnp.sum((y[None, :, :] - rho * x[:, None, :]) ** 2, axis=-1)
    return -0.5 * quad / v - 0.5 * x.shape[1] * jnp.log(v) + 0.5 * jnp.sum(y**2, -1)[None, :]


@jax.jit
def evaluate_optimal(keys, rho):
    """The bounds on the closed-form optimal critics (Song & Ermon's variance theorem is about
    them): NWJ(1 + log r), DV(log r) (MINE's value), InfoNCE(log r), SMILE(log r)."""

    def one(key):
        x, y = sample(key, rho, False)
        lr = log_ratio(x, y, rho)
        return {
            "nwj": entreg.nwj_bound(lr + 1.0),
            "mine": entreg.dv_bound(lr),
            "infonce": entreg.infonce_bound(lr),
            "smile": entreg.smile_bound(lr, tau=SMILE_TAU),
        }

    return jax.lax.map(one, keys)


def summarize(ev):
    ev = {k: np.asarray(v, np.float64) for k, v in ev.items()}
    return {
        "mean": {k: float(v.mean()) for k, v in ev.items()},
        "var": {k: float(v.var(ddof=1)) for k, v in ev.items()},
        "max": {k: float(v.max()) for k, v in ev.items()},
    }


OPTIMIZER = optax.adam(LR)
TRAIN = make_train(OPTIMIZER)


def staircase(key, cubic: bool, steps: int, n_eval: int, label: str):
    k_init, k_run = jax.random.split(key)
    keys = jax.random.split(k_init, len(ESTIMATORS))
    params = {n: critic_init(k) for n, k in zip(ESTIMATORS, keys, strict=True)}
    carry = (params, OPTIMIZER.init(params), entreg.MineState.init())
    trace, levels = [], []
    bar = _harness.progress(range(len(LEVELS) * (steps // CHUNK)), f"staircase ({label})")
    chunks = iter(bar)
    for li, mi in enumerate(LEVELS):
        rho = jnp.float32(rho_for(mi))
        k_level = jax.random.fold_in(k_run, li)
        for c in range(steps // CHUNK):
            next(chunks)
            step_keys = jax.random.split(jax.random.fold_in(k_level, c), CHUNK)
            carry, values = TRAIN(carry, step_keys, rho, cubic)
            trace.append(np.asarray(values))
        eval_keys = jax.random.split(jax.random.fold_in(k_level, 10_000), n_eval)
        levels.append({"truth": mi, **summarize(evaluate(carry[0], eval_keys, rho, cubic))})
    bar.close()
    return {"trace": np.concatenate(trace), "levels": levels}


def optimal_critics(key, n_eval: int):
    out = []
    for li, mi in enumerate(LEVELS):
        keys = jax.random.split(jax.random.fold_in(key, li), n_eval)
        out.append({"truth": mi, **summarize(evaluate_optimal(keys, jnp.float32(rho_for(mi))))})
    return out


def js_offset_study(key, steps: int, seeds: int = 4, dim: int = 2, mi: float = 1.0):
    """Critics trained on the JS objective alone (`entreg.js_bound`'s gradient), `seeds` of them
    at once (vmap), on a 2-d Gaussian pair with 1 nat, where a small critic gets close to the JS
    optimum: the mean offset NWJ(f + 1) - NWJ(f) over 64 fresh batches of 128 per critic."""
    batch, sizes = 128, (dim, 64, 64, 16)
    rho = rho_for(mi, dim)
    optimizer = optax.adam(1e-3)

    def init(k):
        kg, kh = jax.random.split(k)
        return {"g": mlp_init(kg, sizes), "h": mlp_init(kh, sizes)}

    def loss(params, k):
        x, y = sample(k, rho, False, batch, dim)
        return -entreg.js_bound(scores(params, x, y))

    def train(k):
        params = init(k)

        def step(carry, kk):
            params, opt_state = carry
            updates, opt_state = optimizer.update(jax.grad(loss)(params, kk), opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        carry = (params, optimizer.init(params))
        params = jax.lax.scan(step, carry, jax.random.split(k, steps))[0][0]

        def one(kk):
            x, y = sample(kk, rho, False, batch, dim)
            s = scores(params, x, y)
            return jnp.stack([entreg.nwj_bound(s + 1.0), entreg.nwj_bound(s), entreg.dv_bound(s)])

        return jnp.mean(jax.lax.map(one, jax.random.split(jax.random.fold_in(k, 1), 64)), 0)

    out = np.asarray(jax.jit(jax.vmap(train))(jax.random.split(key, seeds)), np.float64)
    return {
        "truth": mi,
        "nwj_shifted": out[:, 0].tolist(),
        "nwj_unshifted": out[:, 1].tolist(),
        "dv": out[:, 2].tolist(),
        "gap": float(np.mean(out[:, 0] - out[:, 1])),
    }


def ksg_study(key, repeats: int):
    """KSG at low dimension (d = 1, 2; 0.5 nats; N = 1000) over `repeats` draws, and at
    d = 20 along the staircase (N = 2000)."""
    ksg = jax.jit(lambda x, y: entreg.ksg_mutual_information(x, y, k=3))
    low = {}
    for d in (1, 2):
        rho = rho_for(0.5, d)
        est = [
            float(ksg(*sample(k, rho, False, 1000, d)))
            for k in jax.random.split(jax.random.fold_in(key, d), repeats)
        ]
        low[d] = {"truth": 0.5, "mean": float(np.mean(est)), "se": float(np.std(est, ddof=1))}
    high = []
    for li, mi in enumerate(_harness.progress(LEVELS, "KSG d=20")):
        x, y = sample(jax.random.fold_in(key, 100 + li), rho_for(mi), False, 2000)
        high.append({"truth": mi, "ksg": float(ksg(x, y))})
    return {"low_dim": low, "d20": high}


def o_information_study(key, n: int = 2000):
    """Closed-form and kNN O-information of a redundant and a synergistic Gaussian triple."""
    noise = 0.5
    redundant = np.array([[1 + noise**2, 1, 1], [1, 1 + noise**2, 1], [1, 1, 1 + noise**2]])
    synergistic = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 2 + noise**2]])
    out = {}
    kl_entropy = jax.jit(entreg.kl_entropy)  # one compilation per number of columns
    for name, cov in (("redundant", redundant), ("synergistic", synergistic)):
        chol = np.linalg.cholesky(cov)
        x = jax.random.normal(jax.random.fold_in(key, len(out)), (n, 3)) @ jnp.asarray(chol.T)
        knn = entreg.multivariate_information(lambda c, x=x: kl_entropy(x[:, list(c)]), 3)
        out[name] = {
            "closed_form": float(entreg.gaussian_o_information(jnp.asarray(cov))),
            "knn": float(knn.o_information),
            "sample_cov": float(entreg.gaussian_o_information(jnp.cov(x.T))),
        }
    return out


def plot(runs, optimal, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = len(ESTIMATORS) + 1
    fig, axes = plt.subplots(len(runs), cols, figsize=(4 * cols, 3.5 * len(runs)), squeeze=False)
    for row, (label, run) in enumerate(runs.items()):
        steps = len(run["trace"]) // len(LEVELS)
        truth = np.repeat(LEVELS, steps)
        for j, name in enumerate(ESTIMATORS):
            ax = axes[row, j]
            ax.plot(run["trace"][:, j], lw=0.4, alpha=0.6, color="tab:blue", label="train batch")
            ax.plot(truth, color="black", lw=1.2, label="true MI")
            if name == "infonce":
                ax.axhline(math.log(BATCH), ls="--", color="tab:red", label="log(batch)")
            ax.set_ylim(-2, 14)
            ax.set_title(f"{name} ({label})")
            ax.set_xlabel("step")
            ax.legend(fontsize=7)
        ax = axes[row, -1]
        for name in ESTIMATORS:
            ax.semilogy(LEVELS, [lv["var"][name] for lv in run["levels"]], marker="o", label=name)
        if row == 0:
            for name in ("nwj", "mine"):
                var = [lv["var"][name] for lv in optimal]
                ax.semilogy(LEVELS, var, ls="--", marker="x", label=f"{name}, optimal critic")
        ax.set_xlabel("true MI (nats)")
        ax.set_title(f"variance over eval batches ({label})")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table(levels, names, title):
    print(f"\n{title}: mean (variance) over eval batches, nats")
    print(f"{'truth':>6}  " + "  ".join(f"{n:>19}" for n in names))
    for lv in levels:
        cells = "  ".join(f"{lv['mean'][n]:>9.3f} ({lv['var'][n]:>7.2g})" for n in names)
        print(f"{lv['truth']:>6.1f}  {cells}")


def by_level(levels, stat, name):
    return {lv["truth"]: lv[stat][name] for lv in levels}


def main() -> int:
    args = _harness.parse_args("mi_staircase", __doc__.splitlines()[0])
    steps, n_eval = (QUICK_STEPS, QUICK_EVAL) if args.quick else (STEPS, EVAL)
    key = jax.random.key(args.seed)
    variants = {"gaussian": False} if args.quick else {"gaussian": False, "cubic": True}
    runs = {
        label: staircase(jax.random.fold_in(key, i), cubic, steps, n_eval, label)
        for i, (label, cubic) in enumerate(variants.items())
    }
    optimal = optimal_critics(jax.random.fold_in(key, 5), 4 * n_eval)
    names = (*ESTIMATORS, "js_nwj_unshifted", "smile_critic_nwj", "smile_critic_dv")
    for label, run in runs.items():
        table(run["levels"], names, f"trained critics, {label}")
    table(optimal, ("nwj", "mine", "infonce", "smile"), "closed-form optimal critics")
    nan = {"gap": math.nan, "nwj_shifted": [], "nwj_unshifted": []}
    js = nan if args.quick else js_offset_study(jax.random.fold_in(key, 4), JS_STEPS)
    ksg = ksg_study(jax.random.fold_in(key, 2), 8)
    oinfo = o_information_study(jax.random.fold_in(key, 3))
    print("\nKSG low dimension:", ksg["low_dim"])
    print("KSG d = 20:", [(h["truth"], round(h["ksg"], 3)) for h in ksg["d20"]])
    print("O-information:", oinfo)

    g = runs["gaussian"]["levels"]
    log_n = math.log(BATCH)
    nce = by_level(g, "mean", "infonce")
    nce_max = max(
        max(float(run["trace"][:, 0].max()), max(lv["max"]["infonce"] for lv in run["levels"]))
        for run in runs.values()
    )
    opt_mean = {n: by_level(optimal, "mean", n) for n in ("nwj", "mine")}
    opt_var = {n: by_level(optimal, "var", n) for n in ("nwj", "mine")}
    ratio = {n: opt_var[n][10.0] / opt_var[n][2.0] for n in opt_var}
    trained_ratio = {
        n: by_level(g, "var", n)[10.0] / by_level(g, "var", n)[2.0] for n in ("nwj", "mine")
    }
    smile_var, nwj_var = by_level(g, "var", "smile"), by_level(g, "var", "smile_critic_nwj")
    smile_vs_nwj = max(smile_var[mi] / nwj_var[mi] for mi in (8.0, 10.0))
    clip_bias = by_level(g, "mean", "smile_critic_dv")[10.0] - by_level(g, "mean", "smile")[10.0]
    gap = {
        mi: by_level(g, "mean", "js")[mi] - by_level(g, "mean", "js_nwj_unshifted")[mi]
        for mi in LEVELS
    }
    low = ksg["low_dim"]
    ksg_low = max(abs(v["mean"] - v["truth"]) / v["se"] for v in low.values())
    ksg_high = ksg["d20"][-1]["ksg"] / ksg["d20"][-1]["truth"]
    claims = [
        _harness.at_most(
            "1a. InfoNCE - log(batch), max over every batch",
            nce_max - log_n,
            0.0,
            f"max {nce_max:.4f} vs log 64 = {log_n:.4f} (training and eval batches)",
            quick=True,
        ),
        _harness.at_most(
            "1b. log(batch) - InfoNCE at 8 and 10 nats (saturates)",
            log_n - min(nce[8.0], nce[10.0]),
            0.6,
            f"InfoNCE {nce[8.0]:.2f}, {nce[10.0]:.2f} vs log 64 = {log_n:.2f}",
            quick=True,
        ),
        _harness.at_least(
            "1c. truth - InfoNCE at 10 nats",
            10.0 - nce[10.0],
            3.5,
            f"InfoNCE {nce[10.0]:.2f} at 10 nats: capped by log N, not by the critic",
            quick=True,
        ),
        _harness.at_least(
            "2a. NWJ / MINE, optimal critic: min over levels of mean / truth",
            min(opt_mean[n][mi] / mi for n in opt_mean for mi in LEVELS),
            0.9,
            ", ".join(
                f"{n} " + "/".join(f"{opt_mean[n][mi]:.2f}" for mi in LEVELS) for n in opt_mean
            )
            + " (DV's batch value is biased upward)",
            quick=True,
        ),
        _harness.at_least(
            "2b. NWJ / MINE, optimal critic: variance at 10 / at 2 nats (min)",
            min(ratio.values()),
            10.0,
            f"nwj {ratio['nwj']:.3g}x, mine (DV) {ratio['mine']:.3g}x; trained critics: nwj "
            f"{trained_ratio['nwj']:.3g}x, mine {trained_ratio['mine']:.3g}x",
            quick=True,
        ),
        _harness.at_most(
            "3a. SMILE(tau=5) / NWJ variance at 8 and 10 nats, one JS-trained critic (max)",
            smile_vs_nwj,
            0.5,
            f"SMILE {smile_var[8.0]:.3g}, {smile_var[10.0]:.3g} vs NWJ(f + 1) "
            f"{nwj_var[8.0]:.3g}, {nwj_var[10.0]:.3g}",
        ),
        _harness.at_least(
            "3b. SMILE clipping bias at 10 nats: |DV(f) - SMILE(f)|",
            abs(clip_bias),
            0.05,
            f"DV {by_level(g, 'mean', 'smile_critic_dv')[10.0]:.2f} vs SMILE "
            f"{by_level(g, 'mean', 'smile')[10.0]:.2f} on the same critic (truth 10)",
        ),
        _harness.at_most(
            "4. |NWJ(f + 1) - NWJ(f) - 1/e| of JS-trained critics",
            abs(js["gap"] - 1 / math.e),
            0.1,
            f"offset {js['gap']:.3f} vs 1/e = {1 / math.e:.3f} (d=2, 1 nat, 4 critics: NWJ(f + 1) "
            + "/".join(f"{v:.2f}" for v in js["nwj_shifted"])
            + ", NWJ(f) "
            + "/".join(f"{v:.2f}" for v in js["nwj_unshifted"])
            + f"); staircase JS critic at 2 nats: {gap[2.0]:.3f}"
            + (" (study skipped at --quick size)" if args.quick else ""),
        ),
        _harness.at_most(
            "5a. KSG low dimension: max |mean - truth| / standard error",
            ksg_low,
            2.0,
            ", ".join(
                f"d={d}: {v['mean']:.3f} +- {v['se']:.3f} vs {v['truth']}" for d, v in low.items()
            ),
            quick=True,
        ),
        _harness.at_most(
            "5b. KSG d = 20 at 10 nats / truth (biased low)",
            ksg_high,
            0.5,
            "d=20: " + ", ".join(f"{h['ksg']:.2f}/{h['truth']:.0f}" for h in ksg["d20"]),
            quick=True,
        ),
        _harness.at_least(
            "6a. O-information of the redundant triple (closed form, kNN: min)",
            min(oinfo["redundant"]["closed_form"], oinfo["redundant"]["knn"]),
            0.05,
            f"closed form {oinfo['redundant']['closed_form']:.3f}, kNN "
            f"{oinfo['redundant']['knn']:.3f}",
            quick=True,
        ),
        _harness.at_most(
            "6b. O-information of the synergistic triple (closed form, kNN: max)",
            max(oinfo["synergistic"]["closed_form"], oinfo["synergistic"]["knn"]),
            -0.05,
            f"closed form {oinfo['synergistic']['closed_form']:.3f}, kNN "
            f"{oinfo['synergistic']['knn']:.3f}",
            quick=True,
        ),
    ]
    measured = {
        "trained": {k: v["levels"] for k, v in runs.items()},
        "optimal_critic": optimal,
        "ksg": ksg,
        "o_information": oinfo,
        "js_offset": js,
        "staircase_js_gap": gap,
        "steps_per_level": steps,
        "eval_batches": n_eval,
    }
    path = args.out / "mi_staircase.png"
    plot(runs, optimal, path)
    return _harness.report(args, claims, measured, [path])


if __name__ == "__main__":
    raise SystemExit(main())
