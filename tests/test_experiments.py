"""Every reference experiment runs in --quick mode and writes a well-formed results.json."""

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
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["quick"] is True and results["claims"]
    for claim in results["claims"]:
        assert set(claim) >= {"name", "value", "threshold", "passed"}
        assert isinstance(claim["passed"], bool)
    for plot in results["plots"]:
        assert Path(plot).stat().st_size > 0
    assert "PASS" in proc.stdout or "FAIL" in proc.stdout
