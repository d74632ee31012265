"""Shared command line, claims table, results.json and progress bar for every experiment."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm


@dataclasses.dataclass
class Claim:
    name: str
    value: float
    threshold: float
    passed: bool
    detail: str = ""
    quick: bool = False  # meaningful at --quick size: the CI run must pass it too


def at_least(name: str, value, threshold, detail: str = "", *, quick: bool = False) -> Claim:
    return Claim(name, float(value), float(threshold), bool(value >= threshold), detail, quick)


def at_most(name: str, value, threshold, detail: str = "", *, quick: bool = False) -> Claim:
    return Claim(name, float(value), float(threshold), bool(value <= threshold), detail, quick)


def parse_args(name: str, description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m experiments.{name}", description=description)
    p.add_argument(
        "--quick",
        action="store_true",
        help="CI run: tiny budget; only the claims marked quick must pass",
    )
    p.add_argument("--out", type=Path, default=Path("runs") / name, help="output directory")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed")
    args = p.parse_args()
    args.started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        # A smoke run is all compilation: skip XLA's backend optimizations (read when the backend
        # starts, i.e. at the first computation, which comes after argument parsing).
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()
    return args


def median_times(fns, repeats: int) -> dict:
    """Median wall time of each ``fn()`` of ``fns`` (name -> callable) over ``repeats`` rounds
    after one warm-up call each. A round calls every function once, in turn, so that a drift of
    the machine's speed during a long run weighs on all of them alike. Use it for functions of
    one runtime (all XLA): interleaved with XLA calls, a NumPy / BLAS call slows its neighbours
    while the other runtime's worker threads still spin; time those apart with `best_time`."""
    import time

    import jax
    import numpy as np

    for fn in fns.values():
        jax.block_until_ready(fn())
    times: dict = {name: [] for name in fns}
    for _ in progress(range(repeats), "timing rounds"):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def best_time(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` alone (see `median_times`)."""
    return median_times({"fn": fn}, repeats)["fn"]


def temp_bytes(fn, *args) -> int:
    """Compiled temporary memory of ``jax.jit(fn)(*args)`` (XLA's memory_analysis)."""
    import jax

    return int(jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes)


def progress(iterable, desc: str, total: int | None = None):
    return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True)


def environment() -> dict:
    """What produced the numbers: versions, backend and device, git commit."""
    import jax
    import jaxlib

    import entreg

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "entreg": entreg.__version__,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "python": platform.python_version(),
        "backend": jax.default_backend(),
        "devices": [d.device_kind for d in jax.devices()],
        "git_commit": commit or None,
    }


def report(args: argparse.Namespace, claims: list[Claim], measured: dict, plots: list[Path]) -> int:
    """Prints the claims table, writes results.json; returns the exit status.

    A full run exits 1 when any claim fails; a --quick run when a claim marked quick fails (the
    others are printed, but a tiny budget cannot decide them).
    """
    width = max(len(c.name) for c in claims)
    print(f"\n{'claim':<{width}}  {'value':>10}  {'threshold':>10}  result")
    for c in claims:
        verdict = "PASS" if c.passed else "FAIL"
        if args.quick and not c.quick:
            verdict += " (not checked at --quick size)"
        print(f"{c.name:<{width}}  {c.value:>10.4g}  {c.threshold:>10.4g}  {verdict}  {c.detail}")
    results = {
        "quick": args.quick,
        "seed": args.seed,
        "wall_time_s": time.perf_counter() - args.started,
        "environment": environment(),
        "claims": [dataclasses.asdict(c) for c in claims],
        "measured": measured,
        "plots": [str(p) for p in plots],
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.out / 'results.json'} and {len(plots)} plot(s)")
    failed = [c.name for c in claims if not c.passed and (c.quick or not args.quick)]
    if failed:
        print(f"FAILED claims: {failed}", file=sys.stderr)
        return 1
    return 0
