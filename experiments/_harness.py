"""Shared command line, claims table, results.json and progress bar for every experiment."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from tqdm import tqdm


@dataclasses.dataclass
class Claim:
    name: str
    value: float
    threshold: float
    passed: bool
    detail: str = ""


def at_least(name: str, value, threshold, detail: str = "") -> Claim:
    return Claim(name, float(value), float(threshold), bool(value >= threshold), detail)


def at_most(name: str, value, threshold, detail: str = "") -> Claim:
    return Claim(name, float(value), float(threshold), bool(value <= threshold), detail)


def parse_args(name: str, description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m experiments.{name}", description=description)
    p.add_argument(
        "--quick", action="store_true", help="CI smoke run: tiny budget, claims may fail"
    )
    p.add_argument("--out", type=Path, default=Path("runs") / name, help="output directory")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        # A smoke run is all compilation: skip XLA's backend optimizations (read when the backend
        # starts, i.e. at the first computation, which comes after argument parsing).
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()
    return args


def best_time(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after one warm-up call."""
    import time

    import jax
    import numpy as np

    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def temp_bytes(fn, *args) -> int:
    """Compiled temporary memory of ``jax.jit(fn)(*args)`` (XLA's memory_analysis)."""
    import jax

    return int(jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes)


def progress(iterable, desc: str, total: int | None = None):
    return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True)


def report(args: argparse.Namespace, claims: list[Claim], measured: dict, plots: list[Path]) -> int:
    """Prints the claims table, writes results.json; returns the exit status.

    A full run exits 1 when a claim fails; a --quick run only smoke-tests the pipeline.
    """
    width = max(len(c.name) for c in claims)
    print(f"\n{'claim':<{width}}  {'value':>10}  {'threshold':>10}  result")
    for c in claims:
        verdict = "PASS" if c.passed else "FAIL"
        print(f"{c.name:<{width}}  {c.value:>10.4g}  {c.threshold:>10.4g}  {verdict}  {c.detail}")
    results = {
        "quick": args.quick,
        "seed": args.seed,
        "claims": [dataclasses.asdict(c) for c in claims],
        "measured": measured,
        "plots": [str(p) for p in plots],
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.out / 'results.json'} and {len(plots)} plot(s)")
    failed = [c.name for c in claims if not c.passed]
    if failed and not args.quick:
        print(f"FAILED claims: {failed}", file=sys.stderr)
        return 1
    return 0
