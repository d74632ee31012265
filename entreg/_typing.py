"""Shape and dtype annotations of the public signatures (jaxtyping, never checked at run time).

entreg validates its own arguments and raises errors that name them; these annotations document
shapes and dtypes for readers, the API reference and static type checkers (to a type checker
``Float[ArrayLike, "..."]`` is `jax.typing.ArrayLike` and ``Float[Array, "..."]`` is `jax.Array`).
Inputs are ``ArrayLike`` (NumPy arrays and Python scalars are accepted), outputs are ``Array``.

Dimension names used across the package:

=========== =====================================================================
``*batch``  leading batch axes, untouched
``v``       categories (vocabulary) along ``axis`` (the last axis by default)
``n``, ``m`` samples (rows); ``d`` features; ``c`` classes
``b``, ``t`` sequences and their tokens (RL losses); ``h`` hidden size
``q``, ``k`` query and key positions (attention); ``heads`` attention heads
=========== =====================================================================
"""

from __future__ import annotations

from collections.abc import Hashable

from jaxtyping import Array, ArrayLike, Bool, Float, Int, Integer, PRNGKeyArray, Real, Shaped

# A 0-d float array: a reduced loss, a bound or a statistic.
Scalar = Float[Array, ""]
# The name of a mapped axis (jax.shard_map, pmap): a string, or any hashable.
AxisName = Hashable

__all__ = [
    "Array",
    "ArrayLike",
    "AxisName",
    "Bool",
    "Float",
    "Int",
    "Integer",
    "PRNGKeyArray",
    "Real",
    "Scalar",
    "Shaped",
]
