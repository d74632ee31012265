"""Every reference experiment runs in --quick mode, passes its quick claims and writes a
well-formed results.json."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(
    p.stem for p in (ROOT / "experiments").glob("*.py") if not p.stem.startswith("_")
)


def test_experiments_discovered():
    assert "quickstart" in EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_quick_run(name, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", f"experiments.{name}", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["quick"] is True and results["claims"]
    for claim in results["claims"]:
        assert set(claim) >= {"name", "value", "threshold", "passed", "quick"}
        assert isinstance(claim["passed"], bool)
    quick = [c for c in results["claims"] if c["quick"]]
    assert quick, f"{name} checks no claim at --quick size"
    failed = [(c["name"], c["value"], c["threshold"]) for c in quick if not c["passed"]]
    assert not failed, f"quick claims failed: {failed}\n{proc.stdout[-2000:]}"
    assert proc.returncode == 0, proc.stderr[-3000:]
    env = results["environment"]
    assert env["jax"] and env["backend"] and results["wall_time_s"] > 0
    for plot in results["plots"]:
        assert Path(plot).stat().st_size > 0
    assert "PASS" in proc.stdout or "FAIL" in proc.stdout


def test_median_times_interleaves_rounds_after_a_warm_up(monkeypatch):
    """Each function runs once to warm up, then once per round in turn; its time is the median
    over the rounds, warm-up excluded. A fake clock that the functions advance stands in for
    the wall clock, so nothing here is timed."""
    import time

    from experiments import _harness

    clock, order = [0.0], []

    def takes(name, seconds):
        it = iter(seconds)

        def fn():
            order.append(name)
            clock[0] += next(it)

        return fn

    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    fns = {"a": takes("a", [9.0, 1.0, 5.0, 3.0]), "b": takes("b", [9.0, 2.0, 2.0, 7.0])}
    assert _harness.median_times(fns, 3) == {"a": 3.0, "b": 2.0}
    assert order == ["a", "b"] * 4
