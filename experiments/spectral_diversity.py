"""Spectral entropies as diversity and information measures: Vendi scores, VNE, DSE.

Three studies, each checking a paper's claim:
  A. Vendi score (Friedman & Dieng 2023; order q: Pasarkar & Dieng 2024) on a mixture of 8
     Gaussians on a circle, Gaussian kernel of bandwidth 1:
     1. VS_1 grows with the number of modes a sampler covers (1 to 8);
     2. a sampler covering all 8 modes but collapsed within each (spread / 20) scores clearly
        below the data (<= 0.7 of it);
     3. small q is more sensitive to a rare mode: adding a mode of 2% mass to 7 common ones
        raises VS_q by more at q = 0.5 than at 1, 2 and inf, in that order.
  B. VNE as a regularizer (Kim et al., CVPR 2023) on scikit-learn's digits: an MLP encoder
     (64 -> 128 -> 32) with a linear classifier, trained with cross-entropy alone, with VNE+
     (`losses.vne_bonus`) and with VNE- (`losses.vne_penalty`):
     4. VNE+ gives the 32-d representation a higher effective rank (Roy-Vetterli) than no
        regularizer and than VNE-; linear-probe test accuracy of each is reported.
  C. Diffusion spectral entropy (Liao, Liu et al. 2023) on noisy k-dimensional manifolds
     (a random smooth embedding of [-1, 1]^k in 16 dimensions plus noise), k = 1..8:
     5. DSE rises with the intrinsic dimension k at every step;
     6. a binned Shannon entropy (10 bins per coordinate) saturates: from k = 2 on it stays
        within 2% of its ceiling log2 N, while DSE keeps rising.

    python -m experiments.spectral_diversity [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import entreg
from entreg import losses
from experiments import _harness

MODES, RADIUS, SPREAD = 8, 4.0, 0.35
ORDERS = (0.5, 1.0, 2.0, np.inf)
RARE = 0.02
DSE_DIMS = tuple(range(1, 9))
AMBIENT, NOISE = 16, 0.02
VNE_WEIGHT = 0.3


def rbf(x, y):
    return jnp.exp(-jnp.sum((x - y) ** 2) / 2.0)


def mixture(key, n, weights, spread=SPREAD):
    """n points of the circle mixture with mode weights ``weights`` [MODES] (zeros allowed)."""
    angles = 2 * np.pi * np.arange(MODES) / MODES
    centers = RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    km, kn = jax.random.split(key)
    mode = jax.random.choice(km, MODES, (n,), p=jnp.asarray(weights))
    return jnp.asarray(centers)[mode] + spread * jax.random.normal(kn, (n, 2)), mode


def vendi_study(key, n):
    vs = jax.jit(lambda x, q: entreg.vendi_score(x, kernel=rbf, order=q), static_argnums=1)
    keys = jax.random.split(key, 4)
    covered = []
    for k in DSE_DIMS:  # 1..8 modes
        w = np.r_[np.ones(k), np.zeros(MODES - k)] / k
        covered.append(float(vs(mixture(keys[0], n, w)[0], 1.0)))
    uniform = np.ones(MODES) / MODES
    data, _ = mixture(keys[1], n, uniform)
    collapsed, _ = mixture(keys[1], n, uniform, spread=SPREAD / 20)
    common = np.r_[np.ones(MODES - 1), 0.0] / (MODES - 1)
    rare = np.r_[np.ones(MODES - 1) * (1 - RARE) / (MODES - 1), RARE]
    without, _ = mixture(keys[2], n, common)
    with_rare, _ = mixture(keys[2], n, rare)
    gain = {q: float(vs(with_rare, q) / vs(without, q) - 1.0) for q in ORDERS}
    return {
        "covered": covered,
        "data": float(vs(data, 1.0)),
        "collapsed": float(vs(collapsed, 1.0)),
        "rare_gain": gain,
        "examples": {"data": np.asarray(data), "collapsed": np.asarray(collapsed)},
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


def train_encoder(term, train, seed, steps, batch, label):
    """Cross-entropy through a linear head, plus ``term`` on the representation if given."""
    x, y = (jnp.asarray(a) for a in train)
    graphdef, params = nnx.split(Encoder(nnx.Rngs(seed)))
    opt = optax.adam(1e-3)
    opt_state = opt.init(params)

    def forward(params, xb, yb):
        z, logits = nnx.merge(graphdef, params)(xb)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
        return ce, {"features": z}

    loss_fn = entreg.compose(forward, *(() if term is None else (term,)))

    @jax.jit
    def step(params, opt_state, key):
        idx = jax.random.choice(key, len(y), (batch,), replace=False)
        grads = jax.grad(lambda p: loss_fn(p, x[idx], y[idx], state=loss_fn.init(), step=0)[0])(
            params
        )
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for k in _harness.progress(jax.random.split(jax.random.key(seed), steps), f"digits {label}"):
        params, opt_state = step(params, opt_state, k)
    return nnx.merge(graphdef, params)


def vne_study(seed, steps, batch):
    train, (xte, yte) = load_digits(seed)
    runs = {
        "none": None,
        "VNE+": losses.vne_bonus(VNE_WEIGHT),
        "VNE-": losses.vne_penalty(VNE_WEIGHT),
    }
    out = {}
    for label, term in runs.items():
        model = train_encoder(term, train, seed, steps, batch, label)
        z_tr, z_te = np.asarray(model(train[0])[0]), np.asarray(model(xte)[0])
        out[label] = {
            "effective_rank": float(entreg.effective_rank(z_te)),
            "exp_vne": float(jnp.exp(entreg.von_neumann_entropy(z_te))),
            "probe_accuracy": probe_accuracy(z_tr, train[1], z_te, yte),
            "spectrum": np.linalg.svd(z_te, compute_uv=False).tolist(),
        }
    return out


def manifold(key, n, k):
    """n noisy points on a k-dimensional smooth manifold in AMBIENT dimensions."""
    ku, ka, kb, kn = jax.random.split(key, 4)
    u = jax.random.uniform(ku, (n, k), minval=-1.0, maxval=1.0)
    a = jax.random.normal(ka, (k, AMBIENT)) / np.sqrt(k)
    b = jax.random.uniform(kb, (AMBIENT,), maxval=2 * np.pi)
    return jnp.sin(u @ a + b) + NOISE * jax.random.normal(kn, (n, AMBIENT))


def binned_entropy(x, bins=10) -> float:
    """Shannon entropy (bits) of the histogram of points over a grid of `bins` per coordinate."""
    lo, hi = x.min(0), x.max(0)
    cells = np.clip(((x - lo) / (hi - lo + 1e-12) * bins).astype(int), 0, bins - 1)
    _, counts = np.unique(cells, axis=0, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def dse_study(key, n, repeats):
    dse = jax.jit(lambda x: entreg.diffusion_spectral_entropy(x, sigma=1.0))
    out = {"dse": [], "binned": []}
    for k in _harness.progress(DSE_DIMS, "DSE vs intrinsic dimension"):
        keys = jax.random.split(jax.random.fold_in(key, k), repeats)
        xs = [manifold(kk, n, k) for kk in keys]
        out["dse"].append(float(np.mean([dse(x) for x in xs])))
        out["binned"].append(float(np.mean([binned_entropy(np.asarray(x)) for x in xs])))
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
    ax.plot(DSE_DIMS, vendi["covered"], marker="o", label="VS_1")
    ax.set_xlabel("modes covered")
    ax.set_title("Vendi score counts modes")
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
    ax.plot(DSE_DIMS, dse["dse"], marker="o", label="DSE (bits)")
    ax.plot(DSE_DIMS, dse["binned"], marker="s", label="binned Shannon (bits)")
    ax.axhline(np.log2(n_dse), color="k", ls="--", lw=1, label="log2 N")
    ax.set_xlabel("intrinsic dimension k")
    ax.set_title("DSE tracks intrinsic dimension")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    args = _harness.parse_args("spectral_diversity", __doc__.splitlines()[0])
    n_vendi, steps, n_dse, repeats = (64, 20, 64, 1) if args.quick else (800, 1500, 500, 3)
    key = jax.random.key(args.seed)
    k_vendi, k_dse = jax.random.split(key)
    vendi = vendi_study(k_vendi, n_vendi)
    vne = vne_study(args.seed, steps, batch=128)
    dse = dse_study(k_dse, n_dse, repeats)

    gains = [vendi["rare_gain"][q] for q in ORDERS]
    ceiling = np.log2(n_dse)
    claims = [
        _harness.at_least(
            "vendi: min VS_1 increase per covered mode",
            float(np.min(np.diff(vendi["covered"]))),
            0.0,
            " -> ".join(f"{v:.2f}" for v in vendi["covered"]),
        ),
        _harness.at_most(
            "vendi: collapsed / data VS_1",
            vendi["collapsed"] / vendi["data"],
            0.7,
            f"{vendi['collapsed']:.2f} vs {vendi['data']:.2f}",
        ),
        _harness.at_least(
            "vendi: min gain decrease from q to the next q",
            float(np.min(-np.diff(gains))),
            0.0,
            "gain at q = 0.5, 1, 2, inf: " + ", ".join(f"{g:+.3f}" for g in gains),
        ),
        _harness.at_least(
            "VNE+: erank - max(none, VNE-)",
            vne["VNE+"]["effective_rank"]
            - max(vne["none"]["effective_rank"], vne["VNE-"]["effective_rank"]),
            0.0,
            ", ".join(
                f"{k} {v['effective_rank']:.2f} (probe {v['probe_accuracy']:.3f})"
                for k, v in vne.items()
            ),
        ),
        _harness.at_least(
            "DSE: min increase per intrinsic dimension",
            float(np.min(np.diff(dse["dse"]))),
            0.0,
            " -> ".join(f"{v:.2f}" for v in dse["dse"]),
        ),
        _harness.at_most(
            "binned Shannon: max gap to log2 N from k = 2, relative",
            float(np.max(ceiling - np.asarray(dse["binned"][1:])) / ceiling),
            0.02,
            " -> ".join(f"{v:.2f}" for v in dse["binned"]) + f" (log2 N = {ceiling:.2f})",
        ),
    ]
    path = args.out / "spectral_diversity.png"
    plot(vendi, vne, dse, n_dse, path)
    measured = {
        "vendi": {k: v for k, v in vendi.items() if k != "examples"}
        | {"rare_gain": {str(q): g for q, g in vendi["rare_gain"].items()}},
        "vne": vne,
        "dse": dse,
    }
    return _harness.report(args, claims, measured, [path])


if __name__ == "__main__":
    raise SystemExit(main())
