"""Spectral entropies as diversity and information measures: Vendi scores, VNE, DSE.

Three studies, each checking a paper's claim:
  A. Vendi score (Friedman & Dieng 2023; order q: Pasarkar & Dieng 2024) on a mixture of 8
     Gaussians on a circle, Gaussian kernel of bandwidth 1 (modes 3 bandwidths apart):
     1. VS_1 counts modes: a sampler covering m equally weighted modes scores m times the
        one-mode score (within 15%, m = 1..8);
     2. a sampler covering all 8 modes but collapsed within each (spread / 20) scores clearly
        below the data (<= 0.7 of it);
     3. small q is more sensitive to a rare mode: adding a mode of 2% mass to 7 common ones
        raises VS_q by more at q = 0.5 than at 1, 2 and inf, in that order (by >= 0.005 each).
  B. VNE as a regularizer (Kim et al., CVPR 2023) on scikit-learn's digits: an MLP encoder
     (64 -> 128 -> 32) with a linear classifier, trained with cross-entropy alone, with VNE+
     (`losses.vne_bonus`) and with VNE- (`losses.vne_penalty`), the three runs vmapped from the
     same initialization over the same batches:
     4. VNE+ gives the 32-d representation a higher effective rank (Roy-Vetterli) than no
        regularizer and than VNE-, by at least 1; linear-probe test accuracy of each is reported.
  C. Diffusion spectral entropy (Liao, Liu et al. 2023) against the classic Shannon entropy of
     binned coordinates, on the DSE paper's toy data: N points uniform on [-1, 1]^k in the
     first k of 16 coordinates (the others constant), k = 1..8, clean and with uniform noise of
     amplitude NOISE in every coordinate; the binned estimator is the paper's (each coordinate
     min-max scaled and cut into 2 bins):
     5. on clean data the binned entropy resolves the intrinsic dimension (it rises by >= 0.5
        bit per dimension: it is not saturated);
     6. with noise, DSE still rises with k (by >= 0.25 bit per dimension) and moves less than
        one dimension's worth: its mean shift from the clean values is below its mean step per
        dimension on clean data;
     7. with noise, DSE tracks k better than the binned entropy: their Spearman correlations
        with k (over every cloud) differ by >= 0.5 (noise fills the constant coordinates, which
        min-max scaling blows up to full bins, so the binned entropy forgets k).

    python -m experiments.spectral_diversity [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from scipy.stats import spearmanr

import entreg
from entreg import losses
from experiments import _harness

MODES, RADIUS, SPREAD = 8, 4.0, 0.35
ORDERS = (0.5, 1.0, 2.0, np.inf)
RARE = 0.02
AMBIENT, NOISE, DSE_SIGMA = 16, 0.1, 1.0
VNE_WEIGHT = 0.3
VNE_RUNS = {"none": (0.0, 0.0), "VNE+": (VNE_WEIGHT, 0.0), "VNE-": (0.0, VNE_WEIGHT)}


def rbf(x, y):
    return jnp.exp(-jnp.sum((x - y) ** 2) / 2.0)


@functools.partial(jax.jit, static_argnums=1)
def mixture(key, n, weights, spread=SPREAD):
    """n points of the circle mixture with mode weights ``weights`` [MODES] (zeros allowed)."""
    angles = 2 * np.pi * np.arange(MODES) / MODES
    centers = RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    km, kn = jax.random.split(key)
    mode = jax.random.choice(km, MODES, (n,), p=jnp.asarray(weights))
    return jnp.asarray(centers)[mode] + spread * jax.random.normal(kn, (n, 2)), mode


def vendi_study(key, n):
    keys = jax.random.split(key, 4)
    uniform = np.ones(MODES) / MODES
    common = np.r_[np.ones(MODES - 1), 0.0] / (MODES - 1)
    rare = np.r_[np.ones(MODES - 1) * (1 - RARE) / (MODES - 1), RARE]
    clouds = [
        mixture(keys[0], n, np.r_[np.ones(m), np.zeros(MODES - m)] / m, SPREAD)[0]
        for m in range(1, 9)
    ]
    clouds += [
        mixture(keys[1], n, uniform, SPREAD)[0],
        mixture(keys[1], n, uniform, SPREAD / 20)[0],
        mixture(keys[2], n, common, SPREAD)[0],
        mixture(keys[2], n, rare, SPREAD)[0],
    ]
    # Every set and order at once: one compiled program.
    vs = jax.jit(lambda c: {q: entreg.vendi_score(c, kernel=rbf, order=q) for q in ORDERS})(
        jnp.stack(clouds)
    )
    vs = {q: np.asarray(v) for q, v in vs.items()}
    covered = vs[1.0][:MODES]
    gain = {q: float(v[-1] / v[-2] - 1.0) for q, v in vs.items()}
    return {
        "covered": covered.tolist(),
        "per_mode": (covered / (np.arange(1, MODES + 1) * covered[0])).tolist(),
        "data": float(vs[1.0][MODES]),
        "collapsed": float(vs[1.0][MODES + 1]),
        "rare_gain": gain,
        "examples": {"data": np.asarray(clouds[MODES]), "collapsed": np.asarray(clouds[MODES + 1])},
    }


class Encoder(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(64, 128, rngs=rngs)
        self.l2 = nnx.Linear(128, 32, rngs=rngs)
        self.head = nnx.Linear(32, 10, rngs=rngs)

    def __call__(self, x):
        z = self.l2(jax.nn.relu(self.l1(x)))
        return z, self.head(jax.nn.relu(z))


def load_digits(seed):
    from sklearn.datasets import load_digits as sk_digits

    x, y = sk_digits(return_X_y=True)
    x = (x / 16.0 - 0.5).astype(np.float32)
    perm = np.random.default_rng(seed).permutation(len(y))
    cut = int(0.7 * len(y))
    return (x[perm[:cut]], y[perm[:cut]]), (x[perm[cut:]], y[perm[cut:]])


def probe_accuracy(z_train, y_train, z_test, y_test) -> float:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=2000).fit(z_train, y_train)
    return float(clf.score(z_test, y_test))


def train_encoders(train, seed, steps, batch):
    """Trains one encoder per VNE_RUNS entry, vmapped: the same initialization and batches, and
    the same composed loss, cross-entropy - w+ VNE + w- VNE, whose (w+, w-) are traced weights
    (optax-style schedules of the step) of `losses.vne_bonus` and `losses.vne_penalty`."""
    x, y = (jnp.asarray(a) for a in train)
    graphdef, params = nnx.split(nnx.jit(Encoder)(nnx.Rngs(seed)))
    opt = optax.adam(1e-3)
    weights = jnp.asarray(list(VNE_RUNS.values()))

    @jax.jit
    def init(params):  # one copy per run
        params = jax.tree.map(lambda p: jnp.stack([p] * len(VNE_RUNS)), params)
        return params, jax.vmap(opt.init)(params)

    params, opt_state = init(params)

    def forward(params, xb, yb):
        z, logits = nnx.merge(graphdef, params)(xb)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
        return ce, {"features": z}

    def run_step(params, opt_state, w, idx):
        loss_fn = entreg.compose(
            forward,
            losses.vne_bonus(lambda step: w[0], name="vne_plus"),
            losses.vne_penalty(lambda step: w[1], name="vne_minus"),
        )
        grads = jax.grad(lambda p: loss_fn(p, x[idx], y[idx], state=loss_fn.init(), step=0)[0])(
            params
        )
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    @jax.jit
    def step(params, opt_state, key):
        idx = jax.random.choice(key, len(y), (batch,), replace=False)
        return jax.vmap(run_step, in_axes=(0, 0, 0, None))(params, opt_state, weights, idx)

    for k in _harness.progress(jax.random.split(jax.random.key(seed), steps), "digits"):
        params, opt_state = step(params, opt_state, k)
    return graphdef, params


def vne_study(seed, steps, batch, probe: bool):
    train, (xte, yte) = load_digits(seed)
    graphdef, params = train_encoders(train, seed, steps, batch)

    @jax.jit
    @jax.vmap  # over the runs
    def representations(params):
        model = nnx.merge(graphdef, params)
        z_te = model(xte)[0]
        stats = (entreg.effective_rank(z_te), jnp.exp(entreg.von_neumann_entropy(z_te)))
        return model(train[0])[0], z_te, stats

    z_tr, z_te, (erank, exp_vne) = jax.device_get(representations(params))
    out = {}
    for i, label in enumerate(VNE_RUNS):
        out[label] = {
            "effective_rank": float(erank[i]),
            "exp_vne": float(exp_vne[i]),
            "probe_accuracy": probe_accuracy(z_tr[i], train[1], z_te[i], yte) if probe else None,
            "spectrum": np.linalg.svd(z_te[i], compute_uv=False).tolist(),
        }
    return out


def hypercube(rng, n, k, noise):
    """The DSE paper's toy data: n points uniform on [-1, 1]^k in the first k of AMBIENT
    coordinates, 0 in the others, plus uniform noise of amplitude ``noise`` everywhere."""
    x = np.zeros((n, AMBIENT))
    x[:, :k] = rng.uniform(-1.0, 1.0, (n, k))
    return x + noise * rng.uniform(-1.0, 1.0, (n, AMBIENT))


def binned_entropy(x, bins=2) -> float:
    """Shannon entropy (bits) of the histogram of the points over a grid of ``bins`` cells per
    coordinate, each coordinate min-max scaled (the DSE paper's baseline, 2 bins)."""
    lo, hi = x.min(0), x.max(0)
    cells = np.clip(((x - lo) / np.maximum(hi - lo, 1e-12) * bins).astype(int), 0, bins - 1)
    _, counts = np.unique(cells, axis=0, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def dse_study(seed, n, dims, repeats):
    """DSE and binned entropy [noise level, dimension, repeat] on clean and noisy clouds."""
    rng = np.random.default_rng(seed)
    levels = (0.0, NOISE)
    x = np.array(
        [[[hypercube(rng, n, k, s) for _ in range(repeats)] for k in dims] for s in levels]
    )
    dse = jax.jit(
        jax.vmap(lambda c: entreg.diffusion_spectral_entropy(c, sigma=DSE_SIGMA))
    )  # one compilation for every cloud
    flat = x.reshape(-1, n, AMBIENT).astype(np.float32)
    out = {
        "noise": list(levels),
        "dims": list(dims),
        "dse": np.asarray(dse(flat)).reshape(x.shape[:3]),
        "binned": np.array([binned_entropy(c) for c in flat]).reshape(x.shape[:3]),
    }
    k = np.repeat(np.asarray(dims), repeats)
    out["spearman"] = {
        name: [float(spearmanr(k, v.ravel())[0]) for v in out[name]] for name in ("dse", "binned")
    }
    return out


def plot(vendi, vne, dse, n_dse, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(20, 4))
    ax = axes[0]
    for label, pts in vendi["examples"].items():
        ax.scatter(pts[:, 0], pts[:, 1], s=3, label=label, alpha=0.6)
    ax.set_title(f"data VS_1 = {vendi['data']:.2f}, collapsed {vendi['collapsed']:.2f}")
    ax.legend(fontsize=8)
    ax.set_aspect("equal")
    ax = axes[1]
    modes = np.arange(1, MODES + 1)
    ax.plot(modes, vendi["covered"], marker="o", label="VS_1")
    ax.plot(modes, modes * vendi["covered"][0], "k--", lw=1, label="m x VS_1(1 mode)")
    ax.set_xlabel("modes covered")
    ax.set_title("Vendi score counts modes")
    ax.legend(fontsize=8, loc="upper left")
    ax2 = ax.twinx()
    q_labels = [str(q) for q in ORDERS]
    ax2.bar(
        np.arange(len(ORDERS)) * 0.5 + 5, list(vendi["rare_gain"].values()), width=0.4, alpha=0.4
    )
    ax2.set_ylabel(f"VS_q gain from a {RARE:.0%} mode at q = {', '.join(q_labels)}")
    ax = axes[2]
    for label, r in vne.items():
        s = np.asarray(r["spectrum"])
        ax.semilogy(s / s.sum(), marker=".", label=f"{label}: erank {r['effective_rank']:.1f}")
    ax.set_title("digits: normalized singular values of the representation")
    ax.legend(fontsize=8)
    ax = axes[3]
    for j, s in enumerate(dse["noise"]):
        ls = "-" if s == 0 else "--"
        ax.plot(dse["dims"], dse["dse"][j].mean(-1), "o" + ls, color="C0", label=f"DSE, noise {s}")
        ax.plot(
            dse["dims"], dse["binned"][j].mean(-1), "s" + ls, color="C1", label=f"binned, noise {s}"
        )
    ax.axhline(np.log2(n_dse), color="k", ls=":", lw=1, label="log2 N")
    ax.set_xlabel("intrinsic dimension k")
    ax.set_ylabel("bits")
    ax.set_title("DSE vs binned Shannon entropy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    args = _harness.parse_args("spectral_diversity", __doc__.splitlines()[0])
    if args.quick:
        n_vendi, steps, n_dse, dims, repeats = 256, 30, 128, (1, 2, 3, 4), 2
    else:
        n_vendi, steps, n_dse, dims, repeats = 800, 1500, 500, tuple(range(1, 9)), 3
    vendi = vendi_study(jax.random.key(args.seed), n_vendi)
    vne = vne_study(args.seed, steps, batch=128, probe=not args.quick)
    dse = dse_study(args.seed, n_dse, dims, repeats)

    gains = [vendi["rare_gain"][q] for q in ORDERS]
    per_mode = np.asarray(vendi["per_mode"])
    clean_dse, noisy_dse = dse["dse"].mean(-1)
    clean_bin, noisy_bin = dse["binned"].mean(-1)
    # The noise's shift of DSE in units of DSE's mean step per dimension on clean data.
    dse_shift = np.mean(np.abs(noisy_dse - clean_dse)) / np.mean(np.diff(clean_dse))
    rho = dse["spearman"]
    erank = {k: v["effective_rank"] for k, v in vne.items()}
    claims = [
        _harness.at_most(
            "vendi: max |VS_1(m modes) / (m VS_1(1 mode)) - 1|",
            float(np.max(np.abs(per_mode - 1.0))),
            0.15,
            "VS_1 " + " -> ".join(f"{v:.2f}" for v in vendi["covered"]),
            quick=True,
        ),
        _harness.at_most(
            "vendi: collapsed / data VS_1",
            vendi["collapsed"] / vendi["data"],
            0.7,
            f"{vendi['collapsed']:.2f} vs {vendi['data']:.2f}",
            quick=True,
        ),
        _harness.at_least(
            "vendi: min gain decrease from q to the next q",
            float(np.min(-np.diff(gains))),
            0.005,
            "gain at q = 0.5, 1, 2, inf: " + ", ".join(f"{g:+.3f}" for g in gains),
        ),
        _harness.at_least(
            "VNE+: erank - max(none, VNE-)",
            erank["VNE+"] - max(erank["none"], erank["VNE-"]),
            1.0,
            ", ".join(
                f"{k} {v['effective_rank']:.2f}"
                + ("" if v["probe_accuracy"] is None else f" (probe {v['probe_accuracy']:.3f})")
                for k, v in vne.items()
            ),
            quick=True,
        ),
        _harness.at_least(
            "clean: binned entropy min increase per dimension (bits)",
            float(np.min(np.diff(clean_bin))),
            0.5,
            " -> ".join(f"{v:.2f}" for v in clean_bin),
            quick=True,
        ),
        _harness.at_least(
            f"noise {NOISE}: DSE min increase per dimension (bits)",
            float(np.min(np.diff(noisy_dse))),
            0.25,
            " -> ".join(f"{v:.2f}" for v in noisy_dse),
            quick=True,
        ),
        _harness.at_most(
            f"noise {NOISE}: DSE mean shift / its step per dimension",
            float(dse_shift),
            1.0,
            "clean " + " -> ".join(f"{v:.2f}" for v in clean_dse),
            quick=True,
        ),
        _harness.at_least(
            f"noise {NOISE}: Spearman(k, DSE) - Spearman(k, binned)",
            rho["dse"][1] - rho["binned"][1],
            0.5,
            f"{rho['dse'][1]:.3f} vs {rho['binned'][1]:.3f}; binned "
            + " -> ".join(f"{v:.2f}" for v in noisy_bin)
            + f" (log2 N = {np.log2(n_dse):.2f})",
            quick=True,
        ),
    ]
    path = args.out / "spectral_diversity.png"
    plot(vendi, vne, dse, n_dse, path)
    measured = {
        "vendi": {k: v for k, v in vendi.items() if k != "examples"}
        | {"rare_gain": {str(q): g for q, g in vendi["rare_gain"].items()}},
        "vne": vne,
        "dse": {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in dse.items()},
    }
    return _harness.report(args, claims, measured, [path])


if __name__ == "__main__":
    raise SystemExit(main())
