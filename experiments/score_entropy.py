"""Score entropy discrete diffusion (SEDD; Lou, Meng & Ermon 2024) on sources of known entropy.

Sources whose entropy is exact, so a likelihood bound can be checked against the truth:
  chain  a sticky Markov chain over 4 symbols (uniform start, stay 0.7, else move uniformly),
         length 32: H = log 4 + 31 * 0.94045 = 30.54 nats per sequence;
  names  US-census female first names weighted by frequency (PyPI `names`), 26 letters plus an
         end symbol, length 11: H = 6.515 nats per name.
A small NNX transformer denoiser (`experiments/_denoiser.py`) is trained with `sedd_loss` on fresh
samples every step: absorbing (log-linear noise) and uniform (geometric noise) diffusion on the
chain. On names, absorbing diffusion trains a residual MLP over the whole sequence
(`_denoiser.MLPDenoiser`): the source is a dictionary of 4275 strings to memorize, which the MLP
learns faster than the transformer at equal compute (names bound after 4000 steps: transformer
9.97, MLP 7.49 nats). It trains with ``sampling_eps = 0.1``: its denoiser ignores sigma, so
the conditionals learned at t >= 0.1 serve every t, and skipping the t < 0.1 draws, whose 1/t
weights make the gradient noisy, lowers the bound at equal steps (7.73 vs 7.98 after 2000).
The bound is always the full one. `sedd_elbo` (prior term included) gives the bound in nats
per sequence on held-out samples, with its standard error over sequences.

Samplers. Their distance to the true chain is the unbiased MMD^2 with the kernel
k(x, y) = mean_i 1[(x_i, x_{i+1}) = (y_i, y_{i+1})]: the mean squared distance between the
sampled and the true laws of adjacent pairs (a sampler that unmasks neighbours in the same step
draws them independently, which is what few steps get wrong), against the exact pair law of the
chain, over groups of samples drawn with independent keys (standard error across groups). The
Euler and analytic steps are compared with the EXACT concrete score of the chain under absorbing
diffusion (at a masked position the conditional law of the clean token given its nearest
unmasked neighbours, T^d rows, over e^sigma_bar - 1), so only the sampler differs. Under the
log-linear schedule the two are the same law (e^{dsigma} - 1 = dt sigma'(t)); under the
geometric schedule they differ, and the analytic step unmasks exactly as the forward process
does while Euler's first-order step lags.

Claims checked:
  1. the absorbing bound on the chain ends within 3% of H and is never below H - 3 SE during
     training; the uniform bound ends within 5%;
  2. absorbing beats uniform at equal budget;
  3. with exact scores and the geometric schedule, the analytic sampler is closer to the chain
     than Euler at 8 and 16 steps (by >= 3 SE), and at 128 steps it is within 3 SE of the chain
     (the --quick claims, at 8 and 64 steps and with 1024 instead of 4096 samples: they need
     no training, and --quick trains nothing; `tests/test_score_entropy.py` tests the training
     code);
  4. no sampler leaves a MASK token in its samples (exact scores, and the trained models in
     the full run; checked at --quick size too);
  5. the trained absorbing model's analytic samples approach the chain with more steps: MMD^2 at
     64 steps <= 10% of MMD^2 at 1 step;
  6. on names the bound falls by >= 10% during training, ends within 10% of 6.515 and is never
     below it.

    python -m experiments.score_entropy [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from entreg import losses
from experiments import _denoiser, _harness

SYMBOLS, LENGTH, STAY = 4, 32, 0.7
NAME_LENGTH = 11  # longest name in the census list
LR, NAMES_LR, WARMUP = 3e-3, 1e-3, 100  # the MLP trains best at 1e-3, the transformer at 3e-3
EVAL_TIMES, FINAL_BATCHES = 8, 2  # bound curve: 8 times per sequence; final: 2 fresh batches
SAMPLE_STEPS = (1, 4, 16, 64)  # trained models
SCHEDULES = {"geometric": losses.GeometricNoise(), "log-linear": losses.LogLinearNoise()}
# Exact-score settings (schedule, method) -> step counts; under the log-linear schedule the two
# methods are the same law (shown, not claimed).
EXACT = {
    ("geometric", "analytic"): (2, 4, 8, 16, 32, 64, 128),
    ("geometric", "euler"): (2, 4, 8, 16, 32, 64, 128),
    ("log-linear", "analytic"): (4, 16),
    ("log-linear", "euler"): (4, 16),
}
QUICK_EXACT = {("geometric", "analytic"): (8, 64), ("geometric", "euler"): (8,)}


@dataclasses.dataclass(frozen=True)
class Budget:
    steps: int  # chain runs
    batch: int
    names_steps: int
    names_batch: int
    evals: int  # points on each bound curve
    eval_seqs: int  # per held-out batch
    final_draws: int  # time draws of EVAL_TIMES each per sequence in the final bound
    samples: int  # per trained-model sampler setting (8 groups)
    exact_groups: int = 16  # exact-score samples per setting: groups x group_size sequences
    exact_group_size: int = 256
    compare_steps: tuple[int, ...] = (8, 16)  # exact scores: Euler vs analytic
    converged_steps: int = 128  # exact scores: the analytic sampler matches the chain
    dim: int = 64  # transformer width
    layers: int = 2
    names_width: int = 512


FULL = Budget(1200, 128, 6500, 256, evals=10, eval_seqs=512, final_draws=4, samples=1024)
# --quick trains nothing (its claims need no training): only the exact-score samplers count.
QUICK = Budget(0, 0, 0, 0, 0, 0, 0, 0, 16, 64, (8,), 64)
NAMES_SAMPLING_EPS = 0.1


def chain_params():
    trans = np.full((SYMBOLS, SYMBOLS), (1.0 - STAY) / (SYMBOLS - 1))
    np.fill_diagonal(trans, STAY)
    return np.full(SYMBOLS, 1.0 / SYMBOLS), trans


def chain_entropy() -> float:
    _, trans = chain_params()
    return float(np.log(SYMBOLS) - (LENGTH - 1) * np.sum(trans[0] * np.log(trans[0])))


@functools.partial(jax.jit, static_argnums=1)
def chain_batch(key, size):
    start, trans = chain_params()
    k0, ks = jax.random.split(key)
    first = jax.random.categorical(k0, jnp.log(start), shape=(size,))

    def step(x, k):
        nxt = jax.random.categorical(k, jnp.log(jnp.asarray(trans))[x])
        return nxt, nxt

    _, rest = jax.lax.scan(step, first, jax.random.split(ks, LENGTH - 1))
    return jnp.concatenate([first[:, None], rest.T], axis=1)


def exact_absorbing_model(xt, sigma):
    """The chain's exact concrete score under absorbing diffusion, as a network output.

    At a masked position p_t(x with y there) / p_t(x) = P(x_0 = y | unmasked tokens) /
    (e^sigma_bar - 1), and for a Markov chain that conditional only depends on the nearest
    unmasked neighbours a (d_l to the left) and b (d_r to the right): it is proportional to
    T^{d_l}[a, y] T^{d_r}[y, b], with T^d = lam^d I + (1 - lam^d) / 4 (lam = 0.6). Returned as
    log P + log N, which `AbsorbingGraph.log_score` turns into that ratio."""
    del sigma
    lam = (SYMBOLS * STAY - 1.0) / (SYMBOLS - 1.0)
    real = xt < SYMBOLS
    idx = jnp.arange(xt.shape[1])
    left = jax.lax.cummax(jnp.where(real, idx, -1), axis=1)  # nearest unmasked at or before
    right = jax.lax.cummin(jnp.where(real, idx, xt.shape[1]), axis=1, reverse=True)

    def factor(j, dist, valid):
        tok = jnp.take_along_axis(xt, jnp.clip(j, 0, xt.shape[1] - 1), axis=1)
        decay = (lam ** dist.astype(jnp.float32))[..., None]
        row = decay * jax.nn.one_hot(tok, SYMBOLS) + (1.0 - decay) / SYMBOLS
        return jnp.where(valid[..., None], row, 1.0)

    p = factor(left, idx - left, left >= 0) * factor(right, right - idx, right < xt.shape[1])
    log_p = jnp.log(p) - jnp.log(jnp.sum(p, axis=-1, keepdims=True))
    return jnp.concatenate([log_p + jnp.log(SYMBOLS), jnp.zeros((*xt.shape, 1))], axis=-1)


def pair_mmd2(x: np.ndarray, groups: int) -> tuple[float, float]:
    """Unbiased MMD^2 between the samples x [n, LENGTH] and the chain, with the kernel
    k(x, y) = mean_i 1[(x_i, x_{i+1}) = (y_i, y_{i+1})]; mean and standard error over
    ``groups`` equal groups of samples. A MASK token (a sampler bug) is a pair of probability 0.
    """
    _, trans = chain_params()
    v = SYMBOLS + 1
    pair_p = np.zeros((v, v))
    pair_p[:SYMBOLS, :SYMBOLS] = trans / SYMBOLS  # the uniform start is stationary
    pair_p = pair_p.ravel()
    pairs = x[:, :-1] * v + x[:, 1:]
    est = []
    for g in np.split(pairs, groups):
        n, positions = g.shape
        counts = np.stack([np.bincount(col, minlength=v * v) for col in g.T]).astype(float)
        # sum over i != j of k(x_i, x_j), from the per-position pair counts
        xx = (np.sum(counts**2) - n * positions) / positions / (n * (n - 1))
        est.append(xx - 2.0 * np.mean(pair_p[g]) + np.sum(pair_p**2))
    est = np.asarray(est)
    return float(est.mean()), float(est.std(ddof=1) / np.sqrt(groups))


def load_names():
    """Female first names [K, NAME_LENGTH] (0-25 letters, 26 = end) and their probabilities."""
    import names

    path = os.path.join(os.path.dirname(names.__file__), "dist.female.first")
    rows = [line.split() for line in open(path)]
    tokens = np.full((len(rows), NAME_LENGTH), 26, np.int32)
    for i, row in enumerate(rows):
        tokens[i, : len(row[0])] = [ord(c) - ord("A") for c in row[0]]
    freq = np.array([float(row[1]) for row in rows])
    return tokens, freq / freq.sum()


def decode_name(x) -> str:
    return "".join(chr(ord("a") + int(c)) for c in x if c < 26).capitalize() or "(empty)"


def train(graph, noise, sampler, model, steps, batch, budget: Budget, seed, label, eps, lr):
    """Trains ``model`` with `sedd_loss`; returns the bound curve, the final bound (mean, SE),
    the parameters and ``model_fn(params) -> (x_t, sigma) -> outputs``."""
    graphdef, params = nnx.split(model)
    # Cosine decay to 5%: the bound's last few percent come from the small late steps.
    warmup = min(WARMUP, steps // 5)  # a quick run is shorter than the warm-up
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, steps, lr / 20)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=0.0))
    opt_state = opt.init(params)

    def model_fn(params):
        return lambda xt, sigma: nnx.merge(graphdef, params)(xt, sigma)

    def loss_fn(params, key):
        kd, kl = jax.random.split(key)
        x0 = sampler(kd, batch)
        loss = losses.sedd_loss(kl, model_fn(params), x0, graph, noise, sampling_eps=eps)
        return loss.mean()

    def train_step(carry, key):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, key)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    @jax.jit
    def chunk(params, opt_state, key):
        keys = jax.random.split(key, steps // budget.evals)
        (params, opt_state), loss = jax.lax.scan(train_step, (params, opt_state), keys)
        return params, opt_state, loss.mean()

    @jax.jit
    def bound(params, key, x0):
        return losses.sedd_elbo(key, model_fn(params), x0, graph, noise, num_times=EVAL_TIMES)

    key = jax.random.key(seed)
    k_eval, k_final, key = jax.random.split(key, 3)
    x_eval = sampler(k_eval, budget.eval_seqs)
    curve = {"step": [], "bound": [], "se": [], "loss": []}
    for c in _harness.progress(range(budget.evals), label):
        key, k_train = jax.random.split(key)
        params, opt_state, loss = chunk(params, opt_state, k_train)
        b = np.asarray(bound(params, jax.random.key(c), x_eval))
        curve["step"].append((c + 1) * (steps // budget.evals))
        curve["bound"].append(b.mean())
        curve["se"].append(b.std() / np.sqrt(b.size))
        curve["loss"].append(float(loss))
    # Final bound: fresh held-out batches, several independent time draws per sequence.
    finals = []
    for k in jax.random.split(k_final, FINAL_BATCHES):
        kx, kt = jax.random.split(k)
        x0 = sampler(kx, budget.eval_seqs)
        draws = [bound(params, kk, x0) for kk in jax.random.split(kt, budget.final_draws)]
        finals.append(np.mean(np.asarray(draws), axis=0))
    finals = np.concatenate(finals)
    final = (float(finals.mean()), float(finals.std() / np.sqrt(finals.size)))
    return {k: np.asarray(v) for k, v in curve.items()}, final, params, model_fn


def distances(model_fn, graph, noise, method, steps_list, size, groups, key):
    """(pair_mmd2 mean, its SE, the fraction of MASK tokens left) of ``size`` samples for each
    step count, each drawn with its own key (steps is traced: one compilation per model and
    method). A MASK left in a sample is a sampler bug that the MMD, diluted over the pairs,
    hardly sees."""
    draw = jax.jit(
        functools.partial(
            losses.sample,
            model_fn=model_fn,
            graph=graph,
            noise=noise,
            shape=(size, LENGTH),
            method=method,
        )
    )
    out = {}
    for s in steps_list:
        x = np.asarray(draw(jax.random.fold_in(key, s), steps=s))
        out[s] = (*pair_mmd2(x, groups), float(np.mean(x == SYMBOLS)))
    return out


def exact_sampler_study(settings, budget: Budget, seed):
    """pair_mmd2 by (schedule, method, steps) with the exact absorbing score; independent keys
    for every setting."""
    graph, out = losses.AbsorbingGraph(SYMBOLS), {}
    size = budget.exact_groups * budget.exact_group_size
    for i, ((name, method), steps_list) in enumerate(
        _harness.progress(settings.items(), "exact-score samplers")
    ):
        key = jax.random.key(30_000 + 100 * seed + i)
        results = distances(
            exact_absorbing_model,
            graph,
            SCHEDULES[name],
            method,
            steps_list,
            size,
            budget.exact_groups,
            key,
        )
        out |= {(name, method, steps): d for steps, d in results.items()}
    return out


def trained_sampler_study(trained, budget: Budget, seed):
    """pair_mmd2 of the trained chain models' samples (8 groups), per (model, method, steps)."""
    out = {}
    settings = [
        ("chain absorbing", "analytic"),
        ("chain uniform", "analytic"),
        ("chain uniform", "euler"),
    ]
    for i, (model, method) in enumerate(_harness.progress(settings, "trained samplers")):
        graph, noise, model_fn, params = trained[model]
        key = jax.random.key(20_000 + 100 * seed + i)
        for steps, d in distances(
            model_fn(params), graph, noise, method, SAMPLE_STEPS, budget.samples, 8, key
        ).items():
            out[(model, method, steps)] = d
    return out


def plot(curves, h_chain, h_names, exact, trained, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(21, 4))
    for name in ("chain absorbing", "chain uniform"):
        if name not in curves:
            continue
        c = curves[name]
        axes[0].errorbar(c["step"], c["bound"], yerr=3 * c["se"], label=name, capsize=2)
    axes[0].axhline(h_chain, color="k", ls="--", lw=1, label=f"H = {h_chain:.2f}")
    axes[0].set_ylim(h_chain - 1, h_chain * 1.25)
    axes[0].set_title("chain: bound on -log p (nats/sequence, +-3 SE)")
    for c in [curves[k] for k in curves if k.startswith("names")]:
        axes[1].errorbar(
            c["step"], c["bound"], yerr=3 * c["se"], label="names absorbing", capsize=2
        )
    axes[1].axhline(h_names, color="k", ls="--", lw=1, label=f"H = {h_names:.3f}")
    axes[1].set_ylim(h_names - 0.5, h_names * 1.5)
    axes[1].set_title("names: bound on -log p (nats/name)")
    for ax in axes[:2]:
        ax.set_xlabel("training step")
    for ax, results, title in (
        (axes[2], exact, "exact absorbing scores"),
        (axes[3], trained, "trained models"),
    ):
        for series in sorted({k[:2] for k in results}):
            steps = sorted(s for (*k, s) in results if tuple(k) == series)
            mean = np.array([results[(*series, s)][0] for s in steps])
            se = np.array([results[(*series, s)][1] for s in steps])
            ax.errorbar(steps, mean, yerr=2 * se, marker="o", capsize=2, label=", ".join(series))
        ax.set_xscale("log", base=2)
        ax.set_yscale("symlog", linthresh=1e-4)
        ax.set_xlabel("sampler steps")
        ax.set_title(f"{title}: pair MMD^2 to the chain (+-2 SE)")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    args = _harness.parse_args("score_entropy", __doc__.splitlines()[0])
    budget = QUICK if args.quick else FULL
    h_chain = chain_entropy()
    names_tokens, names_p = load_names()
    h_names = float(-np.sum(names_p * np.log(names_p)))

    def names_batch(key, size):
        idx = jax.random.choice(key, len(names_p), (size,), p=jnp.asarray(names_p))
        return jnp.asarray(names_tokens)[idx]

    rngs = nnx.Rngs(args.seed)
    chain = (budget.steps, budget.batch, budget, args.seed)
    absorbing, uniform, names_graph = (
        losses.AbsorbingGraph(SYMBOLS),
        losses.UniformGraph(SYMBOLS),
        losses.AbsorbingGraph(27),
    )

    def build(cls, *args, **kwargs):  # one compiled initialization instead of many eager ops
        return nnx.jit(lambda r: cls(*args, **kwargs, rngs=r))(rngs)

    net = {"dim": budget.dim, "layers": budget.layers}
    # The transformer for the chain; for the names dictionary a whole-sequence MLP, which
    # memorizes it faster at equal compute (see `_denoiser.MLPDenoiser`).
    runs = {
        "chain absorbing": (
            absorbing,
            losses.LogLinearNoise(),
            chain_batch,
            lambda: build(_denoiser.Denoiser, absorbing.dim, LENGTH, **net),
            *chain,
        ),
        "chain uniform": (
            uniform,
            losses.GeometricNoise(),
            chain_batch,
            lambda: build(_denoiser.Denoiser, uniform.dim, LENGTH, **net),
            *chain,
        ),
        "names absorbing": (
            names_graph,
            losses.LogLinearNoise(),
            names_batch,
            lambda: build(
                _denoiser.MLPDenoiser, names_graph.dim, NAME_LENGTH, width=budget.names_width
            ),
            budget.names_steps,
            budget.names_batch,
            budget,
            args.seed,
        ),
    }
    curves, finals, trained = {}, {}, {}
    if args.quick:  # the quick claims need no training
        runs = {}
    for name, (graph, noise, sampler, model, *rest) in runs.items():
        eps, lr = (NAMES_SAMPLING_EPS, NAMES_LR) if name.startswith("names") else (1e-3, LR)
        curves[name], finals[name], params, model_fn = train(
            graph, noise, sampler, model(), *rest, name, eps, lr
        )
        trained[name] = (graph, noise, model_fn, params)
    if args.quick:
        exact = exact_sampler_study(QUICK_EXACT, budget, args.seed)
        quality, samples = {}, []
    else:
        exact = exact_sampler_study(EXACT, budget, args.seed)
        quality = trained_sampler_study(trained, budget, args.seed)
        graph, noise, model_fn, params = trained["names absorbing"]
        drawn = losses.sample(
            jax.random.key(args.seed), model_fn(params), graph, noise, (12, NAME_LENGTH), steps=32
        )
        samples = [decode_name(x) for x in np.asarray(drawn)]
        print("sampled names:", ", ".join(samples))

    def gap(steps):  # (Euler - analytic) MMD^2 in standard errors
        (a, sa, _), (e, se, _) = (exact[("geometric", m, steps)] for m in ("analytic", "euler"))
        return (e - a) / np.hypot(sa, se)

    def fmt(d):
        return f"{d[0] * 1e3:.2f}e-3 +- {d[1] * 1e3:.2f}e-3"

    gaps = {s: gap(s) for s in budget.compare_steps}
    converged = exact[("geometric", "analytic", budget.converged_steps)]
    claims = [
        _harness.at_least(
            "exact scores, geometric: min (Euler - analytic) MMD^2 / SE",
            min(gaps.values()),
            3.0,
            "; ".join(
                f"{s} steps: analytic {fmt(exact[('geometric', 'analytic', s)])}, Euler "
                f"{fmt(exact[('geometric', 'euler', s)])}"
                for s in budget.compare_steps
            ),
            quick=True,
        ),
        _harness.at_most(
            f"exact scores, geometric, analytic {budget.converged_steps} steps: MMD^2 / SE",
            converged[0] / converged[1],
            3.0,
            f"MMD^2 {fmt(converged)}, {budget.exact_groups} groups of {budget.exact_group_size}",
            quick=True,
        ),
        _harness.at_most(
            "samplers: fraction of MASK tokens left in the samples",
            max(d[2] for d in (*exact.values(), *quality.values())),
            0.0,
            f"over {len(exact) + len(quality)} (model, schedule, method, steps) settings",
            quick=True,
        ),
    ]
    if not args.quick:  # the trained models' claims
        abs_b, abs_se = finals["chain absorbing"]
        names_b, names_se = finals["names absorbing"]
        uni_b, uni_se = finals["chain uniform"]
        c_abs, c_names = curves["chain absorbing"], curves["names absorbing"]
        claims += [
            _harness.at_most(
                "chain absorbing: bound / H - 1",
                abs_b / h_chain - 1.0,
                0.03,
                f"{abs_b:.3f} +- {abs_se:.3f} vs H {h_chain:.3f}",
            ),
            _harness.at_least(
                "chain absorbing: min (bound - H) / SE",
                float(np.min((c_abs["bound"] - h_chain) / c_abs["se"])),
                -3.0,
                "over the training curve",
            ),
        ]
        claims += [
            _harness.at_most(
                "chain uniform: bound / H - 1",
                uni_b / h_chain - 1.0,
                0.05,
                f"{uni_b:.3f} +- {uni_se:.3f}",
            ),
            _harness.at_least(
                "uniform bound - absorbing bound",
                uni_b - abs_b,
                0.0,
                f"{uni_b:.3f} vs {abs_b:.3f} nats",
            ),
        ]
        first, last = (quality[("chain absorbing", "analytic", s)] for s in (1, SAMPLE_STEPS[-1]))
        claims.append(
            _harness.at_most(
                f"trained absorbing, analytic: MMD^2 at {SAMPLE_STEPS[-1]} / at 1 step",
                last[0] / first[0],
                0.1,
                " -> ".join(
                    f"{quality[('chain absorbing', 'analytic', s)][0] * 1e3:.2f}e-3"
                    for s in SAMPLE_STEPS
                ),
            )
        )
        claims += [
            _harness.at_most(
                "names: final / first bound",
                c_names["bound"][-1] / c_names["bound"][0],
                0.9,  # training must lower it by >= 10% (a no-op scores 1)
                f"{c_names['bound'][0]:.3f} -> {c_names['bound'][-1]:.3f}",
            ),
            _harness.at_most(
                "names: bound / H - 1",
                names_b / h_names - 1.0,
                0.10,
                f"{names_b:.3f} +- {names_se:.3f} vs H {h_names:.3f}",
            ),
            _harness.at_least(
                "names: min bound - H over training",
                float(np.min(np.append(c_names["bound"], names_b)) - h_names),
                0.0,
            ),
        ]
    path = args.out / "score_entropy.png"
    plot(curves, h_chain, h_names, exact, quality, path)

    def table(results):
        return {
            "/".join(map(str, k)): {"mmd2": v[0], "se": v[1], "mask_fraction": v[2]}
            for k, v in results.items()
        }

    measured = {
        "budget": dataclasses.asdict(budget),
        "chain_entropy": h_chain,
        "names_entropy": h_names,
        "final_bound": {k: {"mean": v[0], "se": v[1]} for k, v in finals.items()},
        "bound_curves": {k: {kk: vv.tolist() for kk, vv in v.items()} for k, v in curves.items()},
        "exact_score_samplers": table(exact),
        "trained_samplers": table(quality),
        "sampled_names": samples,
    }
    return _harness.report(args, claims, measured, [path])


if __name__ == "__main__":
    raise SystemExit(main())
