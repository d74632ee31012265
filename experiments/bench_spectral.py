"""Benchmark: entreg's Vendi score against the `vendi-score` package, same inputs, one process.

For each shape (n samples, d features) the package's better path is the faster of `score_dual`
(eigenvalues of the d x d covariance) and `score_K` on the n x n cosine kernel (float64 numpy /
scipy). entreg's `vendi_score` (cosine kernel, order 1, jitted, float32) picks the smaller matrix
by itself. Also measured: a naive jnp version that always builds the n x n kernel, the compiled
temporary memory of both JAX versions, and the agreement of the scores.

Claims, per shape (n = 2048, d = 128 and n = 256, d = 2048):
  1. entreg / package-best time <= 1.0;
  2. entreg's float32 score agrees with the package's float64 score to 1e-5 relative;
  3. entreg's compiled temporary memory is at most 0.1x the naive n x n version's when n > d
     (it builds the d x d matrix) and at most 1.05x when n <= d (it builds the same n x n).
2 and 3 are checked at --quick size too (n, d = 256, 16 and 32, 256); times are not.

    python -m experiments.bench_spectral [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import entreg
from experiments import _harness

SHAPES = ((2048, 128), (256, 2048))
QUICK_SHAPES = ((256, 16), (32, 256))


def naive_vendi(x):
    z = x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    lam = jnp.linalg.eigvalsh(z @ z.T / x.shape[0])
    lam = jnp.where(lam > 1e-10, lam, 1.0)
    return jnp.exp(-jnp.sum(lam * jnp.log(lam)))


def package_kernel(x):
    from sklearn import preprocessing
    from vendi_score import vendi

    z = preprocessing.normalize(x, axis=1)
    return vendi.score_K(z @ z.T)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(next(iter(rows.values()))["seconds"])
    for i, name in enumerate(names):
        ms = [r["seconds"][name] * 1e3 for r in rows.values()]
        ax.bar(np.arange(len(rows)) + 0.2 * i, ms, width=0.2, label=name)
    ax.set_xticks(np.arange(len(rows)) + 0.3, [f"n x d = {k}" for k in rows])
    ax.set_yscale("log")
    ax.set_ylabel("median time (ms)")
    ax.set_title("Vendi score, order 1, cosine kernel")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    args = _harness.parse_args("bench_spectral", __doc__.splitlines()[0])
    from vendi_score import vendi

    shapes, repeats = (QUICK_SHAPES, 2) if args.quick else (SHAPES, 7)
    rng = np.random.default_rng(args.seed)
    rows, claims = {}, []
    ours_jit, naive_jit = jax.jit(entreg.vendi_score), jax.jit(naive_vendi)
    for n, d in _harness.progress(shapes, "shapes"):
        x = rng.normal(size=(n, d)).astype(np.float32)
        x64 = x.astype(np.float64)
        xj = jnp.asarray(x)

        t = {
            "entreg": _harness.best_time(lambda: ours_jit(xj), repeats),  # noqa: B023
            "naive_jnp_kernel": _harness.best_time(lambda: naive_jit(xj), repeats),  # noqa: B023
            "package_dual": _harness.best_time(lambda: vendi.score_dual(x64), repeats),  # noqa: B023
            "package_kernel": _harness.best_time(lambda: package_kernel(x64), repeats),  # noqa: B023
        }
        best = min(t["package_dual"], t["package_kernel"])
        best_path = "dual" if t["package_dual"] <= t["package_kernel"] else "kernel"
        ref = float(vendi.score_dual(x64))
        rows[f"{n}x{d}"] = {
            "seconds": t,
            "package_best": best_path,
            "temp_bytes": {
                "entreg": _harness.temp_bytes(entreg.vendi_score, xj),
                "naive_jnp_kernel": _harness.temp_bytes(naive_vendi, xj),
            },
            "score": {"entreg_f32": float(ours_jit(xj)), "package_f64": ref},
        }
        mem = rows[f"{n}x{d}"]["temp_bytes"]
        ours = rows[f"{n}x{d}"]["score"]["entreg_f32"]
        claims.append(
            _harness.at_most(
                f"n={n}, d={d}: |entreg f32 / package f64 score - 1|",
                abs(ours / ref - 1.0),
                1e-5,
                f"VS {ours:.6f} vs {ref:.6f}",
                quick=True,
            )
        )
        claims.append(
            _harness.at_most(
                f"n={n}, d={d}: entreg / naive n x n temp memory",
                mem["entreg"] / mem["naive_jnp_kernel"],
                0.1 if n > d else 1.05,
                f"{mem['entreg'] / 2**20:.3f} vs {mem['naive_jnp_kernel'] / 2**20:.3f} MiB",
                quick=True,
            )
        )
        claims.append(
            _harness.at_most(
                f"n={n}, d={d}: entreg / package-best time",
                t["entreg"] / best,
                1.0,
                f"{t['entreg'] * 1e3:.1f} ms vs {best * 1e3:.1f} ms ({best_path}); "
                f"naive n x n jnp {t['naive_jnp_kernel'] * 1e3:.1f} ms; "
                f"VS {float(ours_jit(xj)):.4f} vs {ref:.4f}",
            )
        )
    for shape, r in rows.items():
        mib = {k: v / 2**20 for k, v in r["temp_bytes"].items()}
        print(f"{shape}: compiled temp MiB " + ", ".join(f"{k} {v:.2f}" for k, v in mib.items()))
    path = args.out / "bench_spectral.png"
    plot(rows, path)
    return _harness.report(args, claims, {"shapes": rows}, [path])


if __name__ == "__main__":
    raise SystemExit(main())
