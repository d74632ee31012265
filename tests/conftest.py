"""Test configuration: 8 virtual CPU devices for sharding tests and float64 for oracles.

XLA_FLAGS must be set before jax is imported anywhere, which is why this runs at import time.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
from hypothesis import settings  # noqa: E402

# Float64 lets the float64 numpy/scipy oracles and finite-difference gradient checks be tight;
# tests of float32 / bfloat16 behaviour pass those dtypes explicitly.
jax.config.update("jax_enable_x64", True)

settings.register_profile("entreg", max_examples=40, deadline=None, derandomize=True)
settings.load_profile("entreg")
