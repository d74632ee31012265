"""Test configuration: 8 virtual CPU devices for sharding tests, float64 for oracles and fast XLA
compilation.

XLA_FLAGS must be set before jax is imported anywhere, which is why this runs at import time.
"""

import os
import subprocess
import sys

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Most of the suite's time is XLA:CPU compiling small programs (op by op for eager runs). Two
# settings halve it without touching the HLO that is compiled, i.e. what the tests check: the
# legacy loop emitters instead of the MLIR fusion emitters, and no LLVM optimization of the
# generated code (as the experiments' --quick runs). The full suite passes with XLA's defaults too
# (ENTREG_TEST_XLA_DEFAULTS=1 runs it so). XLA aborts on a flag it does not know (a later jaxlib
# may drop the first), so a child process tries them once per run; the xdist workers and the
# experiments' subprocesses inherit the decision through the environment.
_FAST_COMPILE = "--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=0"


def _xla_accepts(flags: str) -> bool:
    code = "import jax.numpy as jnp; jnp.zeros(2).block_until_ready()"
    env = {**os.environ, "XLA_FLAGS": f"{os.environ['XLA_FLAGS']} {flags}"}
    probe = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
    return probe.returncode == 0


if "ENTREG_TEST_XLA_FAST_COMPILE" not in os.environ:  # the first process of the run decides
    fast = not os.environ.get("ENTREG_TEST_XLA_DEFAULTS") and _xla_accepts(_FAST_COMPILE)
    os.environ["ENTREG_TEST_XLA_FAST_COMPILE"] = str(int(fast))
    if fast:
        os.environ["XLA_FLAGS"] += " " + _FAST_COMPILE

import jax  # noqa: E402
from hypothesis import settings  # noqa: E402

# Float64 lets the float64 numpy/scipy oracles and finite-difference gradient checks be tight;
# tests of float32 / bfloat16 behaviour pass those dtypes explicitly.
jax.config.update("jax_enable_x64", True)
settings.register_profile("entreg", max_examples=40, deadline=None, derandomize=True)
settings.load_profile("entreg")
